"""ALT ("Align before Adapt") video action recognition: the model library, free of Ray."""
