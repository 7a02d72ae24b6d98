"""Streamlit glue shared by app.py and the pages: cached artifacts, the sidebar, shared state.

Heavy objects (zoo, autoencoder, test images) are loaded once per process with
st.cache_resource on the auto-selected device and shared by every session, so nothing here may
mutate them. Errors become st.error messages; the pages that need a missing artifact say so and
the rest of the app keeps working. Not a page: app.py lists the pages explicitly.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
import torch
from streamlit.runtime.pages_manager import PagesManager

from hyperrep.images.datasets import DatasetRule, ImageSet
from hyperrep.io.files import ArtifactError
from hyperrep.pipeline import artifacts as artifact_files, experiment
from hyperrep.pipeline.experiment import SampleRun
from hyperrep.pipeline.shipped import shipped_pairs
from hyperrep.pipeline.transfer import target_rule
from hyperrep.runtime import cores, settings
from hyperrep.runtime.device import pick_device
from hyperrep.sampling.regions import map_table as latent_map_table
from hyperrep.zoo.format import Zoo

ZOO_PATH = "zoo_path"
MODEL_PATH = "model_path"
REGION = "region"  # {"rows": [...], "label": str}: the anchors chosen on the latent map
POPULATION = "population"  # the latest sampled population (experiment.SampleRun), kept once evaluated
COMPARISON = "comparison_job"  # {"run": SampleRun, "future": Future of experiment.compare, "failed": bool}
FINETUNE = "finetune"  # the latest fine-tuning comparison
SHIPPED = "shipped_pair"  # the sidebar's choice among the shipped artifacts
TRAINING = "training_job"  # a sampler training in the background: {"key", "request", "done", "total", "stop", "future"}
TRAINED = "trained_samplers"  # samplers that finished training, by trained_sampler_key
MAX_TRAINED = 4  # trained samplers a session keeps


@dataclass
class Artifacts:
    """What this session works with; any part may be missing, with the reason in `problems`."""

    device: torch.device
    zoo: Zoo | None = None
    hyperrep: object | None = None  # hyperrep.ae.artifact.HyperRep
    test_data: ImageSet | None = None
    problems: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    zoo_key: tuple[str, str] = ("", "")  # (sidebar path, fingerprint): the cache key of the zoo
    model_key: tuple[str, str] = ("", "")
    model_args: tuple = ()  # the arguments of cached_hyperrep that loaded `hyperrep`


@st.cache_resource(show_spinner=False)
def device() -> torch.device:
    """The auto-selected device; on a CPU, sessions share the cores (hyperrep.runtime.cores: compute steps
    take turns, with up to settings.cpu_threads() threads, as many as other processes leave free)
    and torch flushes denormals (in the thread that runs this first). Both are set once."""
    chosen = pick_device()
    if chosen.type == "cpu":
        cores.share_cores(settings.cpu_threads())
        torch.set_flush_denormal(True)
    return chosen


@st.cache_resource(show_spinner="Loading the zoo…", max_entries=4)
def cached_zoo(path: str, key: str) -> tuple[Zoo, tuple[str, ...]]:
    """The zoo at `path` (a public Model Zoo or a paper folder's dataset.pt is imported once into a
    cache folder); `key` = fingerprint."""
    return artifact_files.load_any_zoo(path, key)


@st.cache_resource(show_spinner="Loading the hyper-representation…", max_entries=4)
def cached_hyperrep(path: str, key: str, device_name: str, zoo_path: str = "", zoo_key: str = ""):
    """The autoencoder with its latents and stored 2-D map, on the device; never fits a UMAP map.

    A paper artifact has no latents or map: it is combined with the zoo (`zoo_path`, `zoo_key`)."""
    zoo = cached_zoo(zoo_path, zoo_key)[0] if zoo_path else None
    return artifact_files.load_any_hyperrep(path, zoo).to(device_name)


@st.cache_resource(show_spinner="Loading the test images…", max_entries=4)
def cached_test_data(data_dir: str | None, rule: DatasetRule, device_name: str) -> ImageSet:
    return rule.load("test", data_dir).to(device_name)


@st.cache_resource(show_spinner="Loading training images…", max_entries=4)
def cached_train_data(n: int, data_dir: str | None, rule: DatasetRule, device_name: str) -> ImageSet:
    """`n` images (seed 0) of the training part of the zoo's training split (hyperrep.images.datasets's rule)."""
    return rule.training_images(n, 0, data_dir).to(device_name)


@st.cache_data(max_entries=8, show_spinner=False)
def zoo_table(path: str, key: str):
    """The zoo's properties table (a copy per session; pages may sort and filter it)."""
    return cached_zoo(path, key)[0].properties.copy()


@st.cache_data(max_entries=8, show_spinner=False)
def map_table(*model_args):
    """The latent table with each row's position (`row`) and stored 2-D map coordinates."""
    model = cached_hyperrep(*model_args)
    return latent_map_table(model.latent_table, model.map_coords)


def load_artifacts() -> Artifacts:
    """Load (from the caches) what the sidebar paths name; each failure is recorded, not raised."""
    found = Artifacts(device=device())
    zoo_path = str(st.session_state.get(ZOO_PATH, settings.default_zoo_path())).strip()
    model_path = str(st.session_state.get(MODEL_PATH, settings.default_hyperrep_path())).strip()
    if zoo_path == str(settings.default_zoo_path()) and artifact_files.paper_with_own_zoo(model_path):
        zoo_path = model_path  # a paper folder opens with its own zoo (its dataset.pt) unless another is entered
    found.zoo_key = (zoo_path, artifact_files.fingerprint(zoo_path))
    found.model_key = (model_path, artifact_files.fingerprint(model_path))
    try:
        missing_default(zoo_path, settings.default_zoo_path(), "zoo", "HYPERREP_ZOO")
        found.zoo, notes = cached_zoo(*found.zoo_key)
        found.notes += list(notes)
    except (ArtifactError, ValueError, KeyError, OSError) as err:
        found.problems["zoo"] = str(err)
    try:
        missing_default(model_path, settings.default_hyperrep_path(), "hyper-representation", "HYPERREP_MODEL")
        paper = artifact_files.artifact_kind(model_path) == artifact_files.PAPER
        if paper and found.zoo is None:
            raise ArtifactError(f"{model_path}: a paper hyper-representation needs a zoo to embed; load one first")
        found.model_args = (*found.model_key, str(found.device), *(found.zoo_key if paper else ()))
        found.hyperrep = cached_hyperrep(*found.model_args)
    except (ArtifactError, ValueError, KeyError, OSError, RuntimeError) as err:
        found.problems["hyperrep"] = str(err)
    if found.zoo is not None and found.hyperrep is not None:
        problem, note = artifact_files.compatibility(found.zoo, found.hyperrep)
        if problem:
            found.problems["hyperrep"] = problem
            found.hyperrep = None
        if note:
            found.notes.append(note)
    if found.zoo is not None:
        try:
            source = artifact_files.dataset_source(found.zoo.manifest)
            if source.warning:
                found.notes.append(source.warning)
            found.test_data = cached_test_data(
                str(source.data_dir) if source.data_dir else None, source.rule, str(found.device)
            )
        except (ArtifactError, ValueError) as err:
            found.problems["test data"] = str(err)
    return found


@st.cache_resource(show_spinner="Loading the other dataset…", max_entries=2)
def other_dataset_images(zoo_key: tuple[str, str], folder: str, n_train: int, n_test: int,
                         device_name: str) -> tuple[ImageSet, ImageSet]:
    """Training and test images of another dataset folder at the zoo's input shape (transfer learning,
    hyperrep.pipeline.transfer's rule: the folder's format and own statistics)."""
    rule = target_rule(cached_zoo(*zoo_key)[0], folder)
    return (rule.training_images(n_train, 0, folder).to(device_name), rule.first_images(n_test, folder).to(device_name))


def missing_default(path: str, default, what: str, env: str) -> None:
    """An ArtifactError saying where to point the app when the default artifact is not there."""
    if path == str(default) and not default.exists():
        raise settings.where_to_point(default, what, env)


def training_images(zoo: Zoo, n: int, device_name: str) -> ImageSet:
    """`n` images of the training split of the zoo's dataset (ArtifactError when it is not installed)."""
    source = artifact_files.dataset_source(zoo.manifest)
    return cached_train_data(n, str(source.data_dir) if source.data_dir else None, source.rule, device_name)


def sidebar(found: Artifacts) -> None:
    """The shipped artifacts to pick from, path inputs for the zoo and the hyper-representation,
    and what each holds or why it failed."""
    with st.sidebar:
        shipped_picker()
        st.text_input(
            "Zoo directory", key=ZOO_PATH,
            help="a hyperrep zoo (zoo.json) or a public Model Zoo directory (imported on first use)",
        )
        if found.zoo is not None:
            st.caption(f":material/check_circle: {found.zoo.name}: {found.zoo.n_models} models, epochs {found.zoo.epochs}")
        else:
            st.error(found.problems.get("zoo", "no zoo"), icon=":material/error:")
        st.text_input(
            "Hyper-representation directory", key=MODEL_PATH,
            help="a hyperrep hyper-representation (config.json + model.safetensors) or the paper's (config_ae.json + checkpoint_ae.pt)",
        )
        if found.hyperrep is not None:
            st.caption(f":material/check_circle: latent dim {found.hyperrep.model.latent_dim}, {len(found.hyperrep.latent_table)} embedded models")
        else:
            st.error(found.problems.get("hyperrep", "no hyper-representation"), icon=":material/error:")
        if "test data" in found.problems:
            st.error(found.problems["test data"], icon=":material/error:")
        threads = f", up to {settings.cpu_threads()} thread(s)" if found.device.type == "cpu" else ""
        st.caption(f"device: `{found.device}`{threads}")


def shipped_picker() -> None:
    """A select box of the shipped (zoo, hyper-representation) pairs; picking one fills both paths."""
    pairs = {pair.label: pair for pair in shipped_pairs()}
    if not pairs:
        return
    current = (_resolved(st.session_state.get(ZOO_PATH)), _resolved(st.session_state.get(MODEL_PATH)))
    matching = [label for label, pair in pairs.items()
                if (_resolved(pair.zoo), _resolved(pair.hyperrep) if pair.hyperrep else current[1]) == current]
    st.session_state[SHIPPED] = matching[0] if matching else None

    def pick() -> None:
        pair = pairs.get(st.session_state.get(SHIPPED))
        if pair is not None:
            st.session_state[ZOO_PATH] = str(pair.zoo)
            if pair.hyperrep is not None:
                st.session_state[MODEL_PATH] = str(pair.hyperrep)

    st.selectbox("Shipped artifacts", list(pairs), key=SHIPPED, on_change=pick, placeholder="paths typed below",
                 help="the zoos and hyper-representations in data/: picking one fills the two paths below")


def _resolved(path) -> str:
    return str(Path(str(path).strip()).expanduser().resolve()) if path else ""


def init_session_defaults() -> None:
    """Default sidebar paths from HYPERREP_ZOO / HYPERREP_MODEL, set once per session."""
    st.session_state.setdefault(ZOO_PATH, str(settings.default_zoo_path()))
    st.session_state.setdefault(MODEL_PATH, str(settings.default_hyperrep_path()))


def leave_legacy_router() -> None:
    """Rerun through app.py if Streamlit's legacy router ran this script (the one workaround for it).

    Until the first st.navigation call of a process, Streamlit treats a `pages/` folder as
    auto-discovered pages: the first session would get a menu of raw file names (including this
    module) and a deep link such as /sample would run its page without app.py, for good. This
    switches the legacy router off, as st.navigation itself does, and starts the run again. It
    relies on the class attribute `PagesManager.uses_pages_directory` (Streamlit 1.67);
    tests/test_app.py::test_the_legacy_router_workaround_still_applies fails, saying so, when a
    Streamlit release drops it."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def artifacts() -> Artifacts:
    """The artifacts loaded by app.py for this run (pages call this)."""
    leave_legacy_router()
    found = st.session_state.get("_artifacts")
    return found if found is not None else load_artifacts()


def need_zoo(found: Artifacts) -> Zoo:
    """The zoo, or stop the page with a message saying why there is none."""
    if found.zoo is None:
        st.warning(f"No zoo loaded: {found.problems.get('zoo', 'enter a zoo directory in the sidebar')}")
        st.stop()
    return found.zoo


def need_hyperrep(found: Artifacts):
    """The hyper-representation, or stop the page with a message saying why there is none."""
    if found.hyperrep is None:
        st.warning(
            "No hyper-representation loaded: "
            f"{found.problems.get('hyperrep', 'enter a hyper-representation directory in the sidebar')}"
        )
        st.stop()
    return found.hyperrep


def need_population(found: Artifacts, message: str):
    """The sampled population of this hyper-representation, or stop with `message` and a link."""
    run = st.session_state.get(POPULATION)
    if run is None or run.model_key != found.model_key:
        st.info(message)
        st.page_link("pages/sample.py", label="Sample & evaluate", icon=":material/casino:")
        st.stop()
    collect_comparisons(run)
    return run


def current_region(found: Artifacts) -> dict | None:
    """The region chosen on the latent map for the loaded hyper-representation, if any."""
    region = st.session_state.get(REGION)
    if region is None or region.get("model_key") != found.model_key:
        return None
    return region


def kept(key: str, default, options=None) -> str:
    """A widget key whose value survives page switches (Streamlit drops the state of widgets a
    page did not draw); sets the default once. Widgets using it pass no value/default of their own."""
    remembered = st.session_state.setdefault("_kept_values", {})
    value = st.session_state[key] if key in st.session_state else remembered.get(key, default)
    if options is not None and not _valid_choice(value, list(options)):
        value = default
    st.session_state[key] = value
    remembered[key] = value
    return key


def _valid_choice(value, options: list) -> bool:
    if isinstance(value, list):
        return all(v in options for v in value)
    return value in options


# -- comparisons in the background -----------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def background_jobs() -> ThreadPoolExecutor:
    """One process-wide pool for work that must not hold a page (the comparisons after sampling):
    the page stays free for navigation and picks the result up when it is done. Torch keeps the
    denormal flushing of device() per thread, so its threads set it too (fine-tuning saturated B_T
    models ran 3.8x slower without; docs/benchmarks.md); hyperrep.runtime.cores gives each turn its threads."""
    denormals = device().type == "cpu"
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="hyperrep-background",
                              initializer=lambda: torch.set_flush_denormal(denormals))


def start_comparisons(run: SampleRun, zoo: Zoo, hyperrep, table, data: ImageSet) -> None:
    """Compute the run's comparisons in the background; the job is kept in the session."""
    future = background_jobs().submit(experiment.compare, run, zoo, hyperrep, table, data)
    st.session_state[COMPARISON] = {"run": run, "future": future, "failed": False}


def comparison_done(run: SampleRun) -> bool:
    job = st.session_state.get(COMPARISON)
    return job is not None and job["run"] is run and job["future"].done()


def comparison_state(run: SampleRun, zoo: Zoo, hyperrep, table, data: ImageSet) -> str:
    """"running", "done" (the comparisons are now attached to `run`) or "failed" (a message in
    run.messages). A run whose comparisons were never started or were lost gets them started."""
    job = st.session_state.get(COMPARISON)
    if run.comparisons is None and (job is None or job["run"] is not run):
        start_comparisons(run, zoo, hyperrep, table, data)
        return "running"
    return collect_comparisons(run)


def collect_comparisons(run: SampleRun) -> str:
    """Attach the finished background comparisons to `run` (any page may pick them up); the state
    as in comparison_state ("running" also when none is known for this run)."""
    job = st.session_state.get(COMPARISON)
    if run.comparisons is not None:
        return "done"
    if job is None or job["run"] is not run or not job["future"].done():
        return "running"
    if job["failed"]:
        return "failed"
    try:
        experiment.finish_comparisons(run, job["future"].result())
    except Exception as err:  # a failed comparison must not lose the evaluated samples
        job["failed"] = True
        run.messages.append(("error", f"The comparisons failed ({type(err).__name__}: {err}); the samples are kept."))
        return "failed"
    return "done"


# -- samplers trained in the background (the flow samplers) ---------------------------------------


def trained_sampler_key(model_key: tuple, strategy: str, params: dict, anchor_rows) -> tuple:
    """What a trained sampler depends on: the hyper-representation, the strategy, its parameters, the anchors."""
    return model_key, strategy, tuple(sorted(params.items())), tuple(int(r) for r in anchor_rows)


def trained_sampler(key: tuple):
    """The sampler this session trained for `key`, or None."""
    return st.session_state.get(TRAINED, {}).get(key)


def start_training(hyperrep, key: tuple, request: dict) -> None:
    """Train the request's sampler on its anchors in the background; the job, with its progress and
    its stop event, is kept in the session (a stopped one samples with the network trained so far)."""
    job = {"key": key, "request": request, "done": 0, "total": 0, "stop": threading.Event()}

    def progress(done: int, total: int) -> None:
        job["done"], job["total"] = done, total

    sampler = experiment.build_sampler(hyperrep, request["strategy"], request["params"], progress=progress,
                                       stop=job["stop"].is_set)
    job["future"] = background_jobs().submit(experiment.fit_sampler, hyperrep, sampler, request["anchor_rows"])
    st.session_state[TRAINING] = job


def finished_training() -> tuple[dict, object] | None:
    """The session's finished training job and its sampler, taken out of the session (a sampler that
    trained every step is kept for the next request with the same key); None while none has finished.
    A failed training raises its error here."""
    job = st.session_state.get(TRAINING)
    if job is None or not job["future"].done():
        return None
    del st.session_state[TRAINING]
    sampler = job["future"].result()
    if sampler.steps_done_ == sampler.steps:
        kept = st.session_state.setdefault(TRAINED, {})
        kept[job["key"]] = sampler
        while len(kept) > MAX_TRAINED:
            kept.pop(next(iter(kept)))
    return job, sampler
