"""Reading other frameworks' checkpoints: PyTorch .pth files (without torch) and their name mappings."""
