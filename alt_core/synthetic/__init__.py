"""The embedded default: procedural scenes and SynthActions videos, and the alt-tiny backbone's pretraining
and probe. Nothing in the model imports this package; it exists because no model hub or dataset host is
reachable offline (docs/method.md, "The embedded default")."""
