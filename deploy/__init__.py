"""The Ray Serve application of ALT on Ray (deploy/app.py) and its configuration (deploy/serve.yaml)."""
