"""Reading other frameworks' checkpoints: PyTorch .pth files (without torch) and DeepMind BYOL pickles."""
