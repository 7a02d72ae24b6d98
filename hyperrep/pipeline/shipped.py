"""The artifacts shipped in `data/` (or HYPERREP_ARTIFACTS): which folder holds a zoo, which a
hyper-representation and on which zoo it was trained, so the app can offer them to pick from
beside typing a path, and pair each zoo with its hyper-representations. A zoo build that is
still going (its finished models committed in `partial/`) is listed too, as BUILDING, and
`load_zoo` assembles the models it has so far.

    for pair in shipped_pairs():   # one (zoo, hyper-representation or None) per choice
        pair.label, pair.zoo, pair.hyperrep
    zoo = load_zoo(path)            # a finished zoo, or what a build has finished so far
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hyperrep.io.files import ArtifactError, read_json
from hyperrep.pipeline.artifacts import HYPERREP, ZOO, artifact_kind
from hyperrep.runtime.settings import artifact_root
from hyperrep.zoo.build import BuildConfig, assemble_zoo, finished_seeds
from hyperrep.zoo.format import Zoo

BUILDING = "building"  # a zoo build folder with finished models in partial/ and no zoo.json yet


@dataclass(frozen=True)
class Shipped:
    """One shipped folder: a zoo (`zoo` is None) or a hyper-representation and its zoo's folder."""

    path: Path
    kind: str  # artifacts.ZOO, artifacts.HYPERREP or BUILDING
    name: str  # the zoo's name (manifest or build config) or, for a hyper-representation, the folder name
    zoo: Path | None = None


@dataclass(frozen=True)
class ShippedPair:
    """A zoo with one of its hyper-representations (or none): one choice in the sidebar."""

    zoo: Path
    hyperrep: Path | None
    label: str


def shipped_root() -> Path:
    """HYPERREP_ARTIFACTS if set, else the repository's data/ folder."""
    return Path(os.environ.get("HYPERREP_ARTIFACTS") or artifact_root() / "data")


def shipped_artifacts(root: Path | str | None = None) -> list[Shipped]:
    """Every zoo and hyper-representation folder directly under `root`, sorted by folder name;
    anything else (images, unfinished builds, broken folders) is left out."""
    root = Path(root) if root is not None else shipped_root()
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if _building(folder):
            config = read_json(folder / "partial" / "config.json")
            found.append(Shipped(folder, BUILDING, f"{config.get('name', folder.name)} "
                                 f"(building: {len(finished_seeds(folder / 'partial'))} of {config.get('n_models')} models)"))
            continue
        try:
            kind = artifact_kind(folder)
            if kind == ZOO:
                found.append(Shipped(folder, ZOO, str(read_json(folder / "zoo.json").get("name", folder.name))))
            elif kind == HYPERREP:
                config = read_json(folder / "config.json")
                found.append(Shipped(folder, HYPERREP, folder.name, (folder / str(config["zoo"])).resolve()))
        except (ArtifactError, KeyError, TypeError, AttributeError, OSError):
            continue
    return found


def shipped_pairs(root: Path | str | None = None) -> list[ShippedPair]:
    """Each shipped hyper-representation with its zoo, and each shipped zoo that has none."""
    artifacts = shipped_artifacts(root)
    zoos = {a.path.resolve(): a for a in artifacts if a.kind == ZOO}
    pairs, paired = [], set()
    for item in artifacts:
        if item.kind == HYPERREP and item.zoo in zoos:
            zoo = zoos[item.zoo]
            pairs.append(ShippedPair(zoo.path, item.path, f"{zoo.path.name} + {item.path.name}"))
            paired.add(item.zoo)
    pairs += [ShippedPair(z.path, None, f"{z.path.name} (zoo only)") for key, z in zoos.items() if key not in paired]
    return pairs


def _building(folder: Path) -> bool:
    partial = folder / "partial"
    return not (folder / "zoo.json").exists() and (partial / "config.json").is_file() and bool(finished_seeds(partial))


def load_zoo(path: Path | str) -> Zoo:
    """The zoo at `path`; for an unfinished build, the zoo its finished models make so far (split
    by the build's own rule over the models present, so splits change as the build goes on)."""
    path = Path(path)
    if not _building(path):
        return Zoo.load(path)
    partial = path / "partial"
    config = BuildConfig.from_file(partial / "config.json")
    zoo = assemble_zoo(config, partial, sorted(finished_seeds(partial)))
    zoo.path = path
    return zoo
