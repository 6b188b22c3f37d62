"""Shared test setup: one data cache for the whole session, never the user's ~/.cache/genforge."""

import pytest


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # a worker of a parallel session: the workers share the cores
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def genforge_cache(tmp_path_factory, request):
    """GENFORGE_CACHE points at a temporary folder shared by every test of the session, and by the workers of
    a parallel session (pytest-xdist): the cache is built for concurrent builders (each entry is written
    aside and renamed into place), so a dataset or an extractor one worker built is the other's too."""
    if not hasattr(request.config, "workerinput"):  # one process: its own folder
        path = tmp_path_factory.mktemp("genforge-cache")
    else:
        path = tmp_path_factory.getbasetemp().parent / "genforge-cache"
        path.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENFORGE_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second intra-op thread, and on a busy machine each hand-off stalls
    (numpy's BLAS too: one KID call took 2.5 s with its threads, 0.25 s without).
    Test modules of tiny models use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def table_runs(tmp_path_factory):
    """Two small VAE runs on the patients CSV (tabletools), one trained longer; the first scored during training
    too. Trained once per test run for every test file that needs a trained table run: test_table_scorer scores
    them in place (eval.json at n=100), other files copy them before writing into them."""
    import genforge
    from tabletools import TINY_TABLE_VAE, patients_csv

    root = tmp_path_factory.mktemp("table-runs")
    source = f"csv:{patients_csv(root)}"
    genforge.train("vae", source, root / "short", steps=20, batch_size=64, progress=False, overrides=TINY_TABLE_VAE,
                   eval_every=10, eval_n=50)
    genforge.train("vae", source, root / "long", steps=80, batch_size=64, progress=False, overrides=TINY_TABLE_VAE)
    return root


@pytest.fixture(scope="session")
def studio_runs(tmp_path_factory, request):
    """Tiny diffusion, GAN and code-transformer runs for the studio's tests (studiotools), trained once per test
    session: the workers of a parallel session share them (the first to ask trains them under a file lock, the
    others wait and read). Tests copy them (``studiotools.copy_runs``) so each has its own gallery."""
    import fcntl

    from studiotools import make_studio_runs

    if not hasattr(request.config, "workerinput"):
        return make_studio_runs(tmp_path_factory.mktemp("studio") / "runs")
    shared = tmp_path_factory.getbasetemp().parent / "studio-runs"
    shared.mkdir(exist_ok=True)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "done").exists():
            make_studio_runs(shared / "runs")
            (shared / "done").touch()
    return shared / "runs"


def pytest_collection_modifyitems(config, items):
    """Files with slow tests run first: with the files shared out between workers (``--dist loadfile``), a
    long file that starts last keeps one worker busy while the other has nothing left to do."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file's tests keep their order
