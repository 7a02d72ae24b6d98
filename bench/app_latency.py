"""How fast the real app answers, alone, next to other sessions and next to busy processes.

    .venv/bin/python bench/app_latency.py [--models 100] [--repeats 2] [--sessions 4]
        [--session-models 30] [--busy 1] [--write-docs]

Starts `streamlit run app.py` on the default artifacts (or HYPERREP_ZOO / HYPERREP_MODEL) and
measures in headless Chromium (1) process start -> Overview rendered with the artifacts loaded,
(2) click on "Sample" with N models -> first estimate on screen -> results plot on screen (all
test images), each in a fresh session. `--busy K` repeats (2) while K busy-looping processes
run; `--sessions N` clicks Sample in N sessions at once (`--session-models` each) next to one
session alone. The measurements are interleaved, round by round, so each ratio compares runs
minutes apart. Goals (GOALS; times are medians over the rounds): (1) <= 10 s; (2) first estimate
<= 2 s, results <= 10 s; N = 4 sessions: slowest results <= 5x one session; 1 busy process:
results <= 2x quiet. The last lines are the ratios. `--write-docs` replaces only the text between
the app-latency markers in docs/benchmarks.md. `--check` exits 1 when a figure misses its goal,
`--record` appends the figures to docs/bench-results/app_latency.csv (bench/record.py).
tests/test_browser.py reuses AppServer and launch_chromium from here.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch
from record import Figure, add_options, finish

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
SCREENSHOTS = ROOT / "assets" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 180_000
GOALS = {"start_to_overview_s": 10.0, "first_estimate_s": 2.0, "results_s": 10.0,
         "sessions_slowest_vs_one": 5.0, "busy_vs_quiet": 2.0}  # each figure at most this
SESSIONS_GOAL_AT, BUSY_GOAL_AT = 4, 1  # the sessions and busy-process counts those two ratios are set for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AppServer:
    """`streamlit run app.py` on a free local port, for a `with` block; `started` is its Popen time."""

    def __init__(self, env: dict[str, str] | None = None, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.log = log

    def __enter__(self) -> "AppServer":
        command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                   "--server.port", str(self.port), "--server.address", "127.0.0.1",
                   "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
                   "--client.toolbarMode", "viewer"]
        if self.log:
            Path(self.log).parent.mkdir(parents=True, exist_ok=True)  # runs/ does not exist in a fresh clone
        output = open(self.log, "w") if self.log else subprocess.DEVNULL
        self.started = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT)
        return self

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Block until /_stcore/health answers ok (RuntimeError if the server dies or times out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {self.process.returncode} (log: {self.log})")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as answer:
                    if answer.read().strip() == b"ok":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"streamlit did not become healthy within {timeout:.0f} s (log: {self.log})")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def launch_chromium(playwright):
    """Debian's Chromium, headless, with the flags that keep it off the (closed) network."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return page


def screenshot(page, path: Path, height: int = 1800) -> None:
    """A screenshot with a tall viewport (Streamlit scrolls inside the page, so full_page adds nothing)."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": height})
    page.wait_for_timeout(800)  # plots re-layout to the new size
    page.screenshot(path=path)
    page.set_viewport_size(size)


def wait_for_overview(page) -> None:
    """The Overview is rendered once its title and the zoo's model count are on screen."""
    page.get_by_role("heading", name="hyperrep explorer").wait_for()
    page.locator('[data-testid="stMetric"]').first.wait_for()


def choose_option(page, label: str, option: str) -> None:
    """Pick `option` in the st.selectbox labelled `label`."""
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def set_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label)
    field.fill(str(value))
    field.press("Enter")


# Records, in the page, when the Sample button is clicked and when each plot first appears; a
# MutationObserver (not a timer) so that pages the browser considers hidden are timed as well.
WATCH_JS = """() => {
  window.__marks = {};
  const wanted = {first: '.st-key-quick_estimate .js-plotly-plot', results: '.st-key-results_plot .js-plotly-plot',
                  compared: '.st-key-samples_map .js-plotly-plot'};
  document.addEventListener('click', (event) => {
    if (event.target.closest('.st-key-sample_button')) window.__marks = {click: performance.now()};
  }, true);
  new MutationObserver(() => {
    if (window.__marks.click === undefined) return;
    for (const [name, selector] of Object.entries(wanted))
      if (window.__marks[name] === undefined && document.querySelector(selector)) window.__marks[name] = performance.now();
  }).observe(document, {childList: true, subtree: true});
}"""


def prepare_sampling(page, models: int, strategy: str | None = None) -> None:
    """Set up the Sample page (strategy, number of models) and start recording marks."""
    page.locator(".st-key-sample_button button").wait_for()
    if strategy is not None:
        choose_option(page, "Strategy", strategy)
    set_number(page, "Number of models", models)
    page.wait_for_timeout(300)  # let the rerun that commits the number finish
    page.evaluate(WATCH_JS)


def click_sample(page) -> None:
    page.locator(".st-key-sample_button button").click()


def wait_marks(page, *names: str) -> dict[str, float]:
    """Seconds from the click to each named mark (waits until all of them are recorded)."""
    condition = " && ".join(f"window.__marks.{name} !== undefined" for name in names)
    page.wait_for_function(f"() => {condition}", timeout=TIMEOUT_MS, polling=100)
    marks = page.evaluate("window.__marks")
    return {name: (marks[name] - marks["click"]) / 1000 for name in names}


def request_samples(page, models: int, strategy: str | None = None) -> tuple[float, float]:
    """Set up and click "Sample"; seconds from the click to the first estimate and to the results plot."""
    prepare_sampling(page, models, strategy)
    click_sample(page)
    marks = wait_marks(page, "first", "results")
    return marks["first"], marks["results"]


def cpu_busy() -> float:
    """The 1-minute load average per core."""
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def load_average() -> float:
    return os.getloadavg()[0]


class BusyLoops:
    """K busy-looping processes (pure Python, one core each) for a `with` block."""

    def __init__(self, k: int):
        self.k = k

    def __enter__(self) -> "BusyLoops":
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.k)]
        time.sleep(1.0)  # let the scheduler (and the app's free-core meter) see them
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


def sample_in_sessions(browser, url: str, sessions: int, models: int) -> list[dict[str, float]]:
    """Click Sample in `sessions` fresh sessions at once; per session, seconds to the first
    estimate and the results plot. Returns once every session's comparisons are on screen too,
    so that the next measurement starts on an idle server."""
    pages = [open_page(browser, f"{url}/sample") for _ in range(sessions)]
    for page in pages:
        prepare_sampling(page, models)
    for page in pages:
        click_sample(page)
    timings = [wait_marks(page, "first", "results") for page in pages]
    for page in pages:
        wait_marks(page, "compared")
        page.close()
    return timings


def measure(args: argparse.Namespace) -> dict:
    """Start the app once; then, round by round, interleave the single-session, busy and
    multi-session measurements, each with the load average before it."""
    from playwright.sync_api import sync_playwright

    figures = {"models": args.models, "session_models": args.session_models, "sessions": args.sessions,
               "busy": args.busy, "quiet": [], "busy_runs": [], "one_session": [], "many_sessions": [],
               "max_threads": os.environ.get("HYPERREP_THREADS") or str(os.cpu_count())}
    log = Path(args.log)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        with AppServer(log=log) as server:
            server.wait_healthy()
            page = open_page(browser, server.url)
            wait_for_overview(page)
            figures["start_to_overview"] = time.perf_counter() - server.started
            page.close()
            for _ in range(args.repeats):
                figures["quiet"].append((load_average(), sample_in_sessions(browser, server.url, 1, args.models)[0]))
                if args.busy:
                    with BusyLoops(args.busy):
                        figures["busy_runs"].append((load_average(), sample_in_sessions(browser, server.url, 1, args.models)[0]))
                if args.sessions:
                    figures["one_session"].append((load_average(), sample_in_sessions(browser, server.url, 1, args.session_models)[0]))
                    figures["many_sessions"].append((load_average(), sample_in_sessions(browser, server.url, args.sessions, args.session_models)))
        browser.close()
    return figures


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def ratio_lines(figures: dict) -> list[str]:
    """The summary lines (medians over the rounds)."""
    lines = []
    if figures["many_sessions"]:
        slowest = median([max(t["results"] for t in run) for _, run in figures["many_sessions"]])
        alone = median([t["results"] for _, t in figures["one_session"]])
        lines.append(f"sessions {figures['sessions']} x {figures['session_models']} models: slowest results "
                     f"{slowest:.1f} s = {slowest / alone:.1f} x one session")
    if figures["busy_runs"]:
        busy = median([t["results"] for _, t in figures["busy_runs"]])
        quiet = median([t["results"] for _, t in figures["quiet"]])
        lines.append(f"busy {figures['busy']}: results {busy:.1f} s = {busy / quiet:.1f} x quiet")
    return lines


def bench_figures(figures: dict) -> list[Figure]:
    """The figures for --check and --record: start, medians of the quiet rounds and the two ratios
    of ratio_lines, each against GOALS (the ratios only at the session and busy counts the goals
    are set for)."""
    quiet = figures["quiet"]
    found = {"start_to_overview_s": figures["start_to_overview"],
             "first_estimate_s": median([t["first"] for _, t in quiet]),
             "results_s": median([t["results"] for _, t in quiet])}
    if figures["many_sessions"]:
        slowest = median([max(t["results"] for t in run) for _, run in figures["many_sessions"]])
        found["sessions_slowest_vs_one"] = slowest / median([t["results"] for _, t in figures["one_session"]])
    if figures["busy_runs"]:
        found["busy_vs_quiet"] = median([t["results"] for _, t in figures["busy_runs"]]) / found["results_s"]
    goal_set = {"sessions_slowest_vs_one": figures["sessions"] == SESSIONS_GOAL_AT,
                "busy_vs_quiet": figures["busy"] == BUSY_GOAL_AT}
    return [Figure(name, value, at_most=GOALS[name] if goal_set.get(name, True) else None)
            for name, value in found.items()]


def report_lines(figures: dict, command: str) -> list[str]:
    device = "CUDA" if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    lines = [
        f"`{command}`, headless Chromium on {platform.machine()} {device}, {time.strftime('%Y-%m-%d %H:%M')} "
        f"UTC; default artifacts, Fashion-MNIST test split (10,000 images); at most {figures['max_threads']} "
        "torch thread(s) per step. Load: the machine's 1-minute load average before each measurement.",
        "",
        "| what | goal | load | measured |",
        "|---|---|---|---|",
        f"| process start → Overview rendered (artifacts loaded) | ≤ 10 s | | {figures['start_to_overview']:.1f} s |",
    ]
    for i, (load, timing) in enumerate(figures["quiet"], start=1):
        lines.append(f"| round {i}: click Sample ({figures['models']} models) → first estimate (1,000 images) / "
                     f"results plot (10,000 images) | ≤ 2 s / ≤ 10 s | {load:.1f} | {timing['first']:.1f} s / {timing['results']:.1f} s |")
        if i <= len(figures["busy_runs"]):
            busy_load, busy = figures["busy_runs"][i - 1]
            lines.append(f"| round {i}: the same with {figures['busy']} busy process(es) | results ≤ 2 × quiet | {busy_load:.1f} | "
                         f"{busy['first']:.1f} s / {busy['results']:.1f} s |")
        if i <= len(figures["many_sessions"]):
            one_load, one = figures["one_session"][i - 1]
            many_load, many = figures["many_sessions"][i - 1]
            lines.append(f"| round {i}: one session, {figures['session_models']} models → first estimate / results | | "
                         f"{one_load:.1f} | {one['first']:.1f} s / {one['results']:.1f} s |")
            each = ", ".join(f"{t['results']:.1f}" for t in many)
            lines.append(f"| round {i}: {figures['sessions']} sessions at once, {figures['session_models']} models each → "
                         f"results (each session) | slowest ≤ 5 × one session | {many_load:.1f} | {each} s |")
    return lines + [""] + ratio_lines(figures)


DOCS_START = "<!-- app-latency:start (written by `bench/app_latency.py --write-docs`) -->"
DOCS_END = "<!-- app-latency:end -->"


def write_docs(lines: list[str], path: Path = DOCS) -> None:
    """Replace the text between DOCS_START and DOCS_END in `path` (everything outside, hand-written,
    stays); without the markers, append a section that holds them."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = DOCS_START + "\n" + "\n".join(lines) + "\n" + DOCS_END
    if DOCS_START in text and DOCS_END in text:
        head, rest = text.split(DOCS_START, 1)
        text = head + block + rest.split(DOCS_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## App latency\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100, help="models per single-session request")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of measurements")
    parser.add_argument("--sessions", type=int, default=0, help="N sessions clicking Sample at once (0: skip)")
    parser.add_argument("--session-models", type=int, default=30, help="models per request of those sessions")
    parser.add_argument("--busy", type=int, default=0, help="K busy-looping processes for the busy runs (0: skip)")
    parser.add_argument("--log", default=str(ROOT / "runs" / "bench_app_latency.log"), help="the server's log file")
    parser.add_argument("--write-docs", action="store_true", help="write the figures into docs/benchmarks.md")
    args = add_options(parser).parse_args()
    if cpu_busy() > 0.5:
        print(f"warning: the CPU is busy (load {cpu_busy():.2f} per core); figures will be pessimistic", file=sys.stderr)
    figures = measure(args)
    shown = [a for i, a in enumerate(sys.argv[1:]) if a not in ("--write-docs", "--check", "--record")
             and not a.startswith("--log") and (i == 0 or sys.argv[i] != "--log")]  # the settings, not where its log went
    lines = report_lines(figures, " ".join(["bench/app_latency.py", *shown]))
    if args.write_docs:
        write_docs(lines)
    print("\n".join(lines))
    return finish(args, "app_latency", bench_figures(figures))


if __name__ == "__main__":
    raise SystemExit(main())
