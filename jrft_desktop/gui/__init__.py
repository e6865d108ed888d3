"""The desktop app (PySide6 + pyqtgraph) over the core engine; `app.main` starts it."""
