"""TorchServe as one more server in benchmarks/bench_service.py (``--torchserve``): set up from PyPI, started
on loopback with the bundled checkpoint behind benchmarks/torchserve/handler.py.

Set-up (once, cached under runs/torchserve/): a virtual environment that sees the project's .venv (torch,
Pillow, binwatch's model package) through a .pth file and adds torchserve and torch-model-archiver at the
pinned version from the package index, then a model archive of the checkpoint. TorchServe needs Java 17+
on PATH. Not used by the tests or CI.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

from load_harness import Server, clean_env, fail, free_port, start

TORCHSERVE_VERSION = "0.12.0"
ROOT = Path(__file__).resolve().parents[1]
HANDLER = Path(__file__).resolve().with_name("torchserve") / "handler.py"
SETUP_DIR = ROOT / "runs" / "torchserve"


def venv_python() -> Path:
    """runs/torchserve/venv with torchserve installed; created on first use."""
    venv = SETUP_DIR / "venv"
    python = venv / "bin" / "python"
    marker = venv / f".torchserve-{TORCHSERVE_VERSION}"
    if marker.is_file():
        return python
    if shutil.which("java") is None:
        raise fail("TorchServe needs Java 17+ on PATH (Debian: apt-get install openjdk-17-jre-headless)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # The project's packages (torch included: 3 GB we do not install twice), processed as a site dir so the
    # editable binwatch install's own .pth files apply too.
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    lib = next((venv / "lib").glob("python3*/site-packages"))
    (lib / "binwatch-project.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in ours))
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            f"torchserve=={TORCHSERVE_VERSION}",
            f"torch-model-archiver=={TORCHSERVE_VERSION}",
        ],
        check=True,
    )
    marker.touch()
    return python


def archive(python: Path, checkpoint: Path, store: Path) -> None:
    store.mkdir(parents=True, exist_ok=True)
    extra = [str(checkpoint.with_suffix(".json"))] if checkpoint.with_suffix(".json").is_file() else []
    subprocess.run(
        [
            str(python.with_name("torch-model-archiver")),
            "--model-name",
            "counter",
            "--version",
            "1.0",
            "--serialized-file",
            str(checkpoint),
            "--handler",
            str(HANDLER),
            *(["--extra-files", ",".join(extra)] if extra else []),
            "--export-path",
            str(store),
            "--force",
        ],
        check=True,
    )


def start_torchserve(
    checkpoint: Path, workdir: Path, cores: int, batch: int = 16, delay_ms: int = 5
) -> Server:
    """TorchServe with one worker, batch ``batch`` within ``delay_ms`` (the issue's setting), on loopback."""
    python = venv_python()
    store = workdir / "model-store"
    archive(python, checkpoint, store)
    port = free_port()
    models = {
        "counter": {
            "1.0": {
                "defaultVersion": True,
                "marName": "counter.mar",
                "minWorkers": 1,
                "maxWorkers": 1,
                "batchSize": batch,
                "maxBatchDelay": delay_ms,
                "responseTimeout": 120,
            }
        }
    }
    config = workdir / "config.properties"
    config.write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{port}",
                f"management_address=http://127.0.0.1:{free_port()}",
                f"metrics_address=http://127.0.0.1:{free_port()}",
                f"model_store={store}",
                "load_models=counter.mar",
                f"models={json.dumps(models)}",
                "disable_token_authorization=true",
                "enable_model_api=false",
                "install_py_dep_per_model=false",
                "job_queue_size=1000",
                "vmargs=-Xmx1g -XX:+UseContainerSupport",
            ]
        )
        + "\n"
    )
    env = {**clean_env(), "BENCH_TORCH_THREADS": str(cores), "TS_DISABLE_SYSTEM_METRICS": "true"}
    server = start(
        f"TorchServe {TORCHSERVE_VERSION} (batch {batch}, {delay_ms} ms)",
        [
            str(python.with_name("torchserve")),
            "--start",
            "--foreground",
            "--ncs",
            "--ts-config",
            str(config),
            "--model-store",
            str(store),
            "--disable-token-auth",
        ],
        env,
        workdir,
        port,
    )
    server.predict_path = "/predictions/counter"
    server.ready_path = "/ping"
    return server
