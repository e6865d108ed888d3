"""The main window's pages, in the order a user goes through them."""
