"""Make the README's screenshot of the web page with the browser test's own code (tests/browser.py). Run it
from the repository root as a module, so that `tests` imports as the package it is:

    python -m docs.screenshot --model models:/alt@champion --tracking-uri sqlite:///$PWD/runs/demo/tune/mlflow.db \
        --clip runs/demo/synth/videos/<class>/<n>.mp4 --out docs/page.png

Serves the model on a free loopback port, uploads the clip in headless Chromium, waits for the answer and
saves the page; the server is taken down afterwards.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.environment import set_defaults

set_defaults()  # before Ray, MLflow and huggingface_hub are imported

from pipelines.console import out, setup_logging
from pipelines.serve import DEFAULT_CONFIG, deploy, serve_config, stop_app
from tests.browser import chromium, save_page, submit_clip
from tests.helpers import free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="registry URI or checkpoint directory")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/page.png"))
    args = parser.parse_args()
    setup_logging(False)
    model = args.model if args.model.startswith("models:/") else str(Path(args.model).resolve())
    url = deploy(serve_config(DEFAULT_CONFIG, model, args.tracking_uri, port=free_port()))
    try:
        with chromium(width=1200, height=900) as driver:
            if submit_clip(driver, url, args.clip.resolve()) != "result":
                raise SystemExit(f"the page showed an error: {driver.find_element('id', 'error').text}")
            save_page(driver, args.out)
    finally:
        stop_app()
    print(f"screenshot: {args.out}", file=out())


if __name__ == "__main__":
    main()
