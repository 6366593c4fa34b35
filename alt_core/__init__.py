"""ALT ("Align before Adapt") video action recognition: the model library, free of Ray."""

import os

# Model hubs are unreachable on offline machines; fail fast instead of retrying for ~45 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
