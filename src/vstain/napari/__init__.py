"""napari integration: reader, writer, sample data and widgets (only here: napari/Qt)."""
