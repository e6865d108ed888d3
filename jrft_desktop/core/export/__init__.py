"""What leaves a run: the vector file (`vector`: save, read, restore) and the merged forms (`merged` for
transformers, `sentence_transformers`, `onnx`, `gguf`), chosen through the registry of forms (`forms`).

The package imports nothing itself: `forms` lists the forms without torch (the CLI's parser and the app read it),
and each form's module loads when it is used."""
