"""The real-photo seed study's setup: the shared sample served as the official archives, and its params.yaml.

    python benchmarks/real_study.py params params.yaml        # set the study's params in a clone's params.yaml
    python benchmarks/real_study.py serve                     # serve the sample on 127.0.0.1:46865 (until Ctrl+C)

The study (benchmarks/studies/real_seeds.json) trains UNet and ResNet34-UNet on the shared
sample of real photos (../shared/data/oxford-pet-sample, 200 pairs, 3 breeds) through the
pipeline, as a user would: the download stage fetches the sample packed as the official
archives (images.tar.gz, annotations.tar.gz) from a server on 127.0.0.1, and the seeds are
DVC experiments (``dvc exp run --queue -S 'train.seed=0,1,2,3,4'``). The recipe is the second
report's as benchmarks/recipes.py runs it (BCE, AdamW lr 1e-3, weight decay 1e-2, OneCycle,
batch 8, horizontal flips and colour jitter 0.2, UNet base 16, the ResNet34 encoder from
scratch, fp32, plain prediction: no flip TTA, no post-processing), 15 epochs, at
``data.image_size`` 64, with ``data.split: random`` 0.6/0.1/0.3 of the 199 listed names
(``data.seed`` 0: 119 train, 20 validation, 60 test images).

``serve`` packs the archives byte for byte as the study's were (members sorted, the gzip
header's time fixed), checks their md5 against the study's and serves them on the study's
port, so that the params (URLs, md5s) of later seeds equal the recorded runs' and the seed
study groups them with those runs. Runs made from other code (another dvc.lock hash of the
stages' code) form a group of their own. To add seeds 2 to 4 to the study:

    git clone <this repository> study && cd study
    python benchmarks/real_study.py params params.yaml && git commit -qam "real-photo study"
    python benchmarks/real_study.py serve &            # until every queued run has downloaded
    dvc exp run --queue -S 'train.seed=2,3,4' && OMP_NUM_THREADS=1 dvc queue start -j 2
    python benchmarks/seed_study.py record --repo . --out real_seeds.json --experiments NAME ...
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.server
import io
import tarfile
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "oxford-pet-sample"
PORT = 46865
# the archives of the recorded study: each one's gzip header time, and the md5 of its bytes
ARCHIVES = {
    "images": (1796292822, "3d3d375232efe82045424493d1afe3e9"),
    "annotations": (1796292830, "8f3bc20e5fc115949abd88713f71c208"),
}
IMAGE_SIZE = 64
SPLIT_FRACTIONS = (0.6, 0.1, 0.3)  # train, val, test of the 199 listed names: 119, 20, 60
TRAIN = {  # benchmarks/recipes.py BASE_TRAIN (the second report's recipe), 15 epochs
    "epochs": 15,
    "lr": 0.001,
    "weight_decay": 0.01,
    "loss": "bce",
    "optimizer": "adamw",
    "scheduler": "onecycle",
    "device": "cpu",
    "precision": "fp32",
    "compile": False,
    "nproc_per_node": 1,
    "ema": 0.0,
    "seed": 0,
}
AUGMENT = {
    "hflip": 0.5,
    "vflip": 0.0,
    "rotate": 0.0,
    "scale": 0.0,
    "brightness": 0.2,
    "contrast": 0.2,
    "saturation": 0.2,
}
MODELS = {"unet": {"base_channels": 16, "batch_size": 8}, "resnet34_unet": {"encoder_weights": None, "batch_size": 8}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="subcommand", required=True)
    params = commands.add_parser("params", help="write the study's settings into a params.yaml (comments kept)")
    params.add_argument("file", type=Path, help="the params.yaml to change")
    params.add_argument("--port", type=int, default=PORT, help="the server's port (default: %(default)s)")
    params.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="data.image_size (default: %(default)s)")
    serve = commands.add_parser("serve", help="serve the sample as the study's archives on 127.0.0.1")
    serve.add_argument("--sample", type=Path, default=SAMPLE, help="the sample folder (default: %(default)s)")
    serve.add_argument("--port", type=int, default=PORT, help="the port (default: %(default)s)")
    serve.add_argument("--write", type=Path, metavar="DIR", help="also write the two archives to DIR")
    return parser


def pack(sample: Path, top: str, gzip_time: int) -> bytes:
    """``sample/top`` as a .tar.gz: members sorted by path, file metadata as on disk, the gzip header's time fixed."""
    if not (sample / top).is_dir():
        raise SystemExit(f"{sample / top}: no such folder (the shared sample: images/, annotations/)")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=gzip_time) as compressed:
        with tarfile.open(fileobj=compressed, mode="w") as tar:
            for path in sorted((sample / top).rglob("*")):
                tar.add(path, arcname=str(path.relative_to(sample)), recursive=False)
    return buffer.getvalue()


def urls(port: int) -> dict[str, str]:
    return {name: f"http://127.0.0.1:{port}/{name}.tar.gz" for name in ARCHIVES}


def write_params(path: Path, port: int, image_size: int) -> None:
    """The study's data, train, models, evaluate and infer settings in ``path`` (other keys and comments kept)."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such params file (a clone's params.yaml)")
    yaml = YAML()
    yaml.preserve_quotes = True
    params = yaml.load(path.read_text(encoding="utf-8"))
    data = params["data"]
    data["source"] = "oxford-iiit-pet"
    data["images_url"], data["annotations_url"] = urls(port)["images"], urls(port)["annotations"]
    data["images_md5"], data["annotations_md5"] = ARCHIVES["images"][1], ARCHIVES["annotations"][1]
    data["image_size"] = image_size
    data["split"] = "random"
    for i, fraction in enumerate(SPLIT_FRACTIONS):
        data["split_fractions"][i] = fraction
    data["seed"] = 0
    params["train"].update(TRAIN)
    params["train"]["augment"].update(AUGMENT)
    for model, section in MODELS.items():
        params["models"][model].update(section)
    for stage in ("evaluate", "infer"):
        params[stage].update(tta=False, postprocess="none")
    with path.open("w", encoding="utf-8") as handle:
        yaml.dump(params, handle)
    print(f"{path}: the real-photo study's params ({image_size} px, archives from 127.0.0.1:{port})")


def serve(sample: Path, port: int, write: Path | None) -> None:
    files = {}
    for name, (gzip_time, md5) in ARCHIVES.items():
        data = pack(sample, name, gzip_time)
        found = hashlib.md5(data).hexdigest()
        if found != md5:
            raise SystemExit(
                f"{sample / name}: packs to md5 {found}, not the study's {md5}: the sample (or its files' "
                "metadata) differs, so runs on it are not the recorded study's"
            )
        files[f"/{name}.tar.gz"] = data
        if write is not None:
            write.mkdir(parents=True, exist_ok=True)
            (write / f"{name}.tar.gz").write_bytes(data)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's naming
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            asked = self.headers.get("Range", "")
            if asked.startswith("bytes=") and asked.endswith("-") and asked[6:-1].isdigit():
                start = min(int(asked[6:-1]), len(body))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    for name, url in urls(port).items():
        print(f"{url}  md5 {ARCHIVES[name][1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:
    args = build_parser().parse_args()
    if args.subcommand == "params":
        write_params(args.file, args.port, args.image_size)
    else:
        serve(args.sample, args.port, args.write)


if __name__ == "__main__":
    main()
