"""Build the TensorRT engines of an engine folder written by ``dpa-build``.

``build_tensorrt_engines`` is called by ``dpa-build --backend tensorrt`` and returns the manifest's
``"tensorrt"`` section. It runs on the target machine (Jetson or x86 dGPU): engines are tied to
the TensorRT version and the GPU they were built on, and to a DLA core.

Precision plan (decided by feature detection, see
:func:`dpa_perception.backends.tensorrt.plan.plan_variant`):

* TensorRT 10.x: weakly typed networks. int8 <- ``int8_trt.onnx`` (explicit Q/DQ) with
  BuilderFlag.INT8 + FP16; high <- ``high.onnx`` with BuilderFlag.FP16.
* TensorRT 11.x: strongly typed only (no precision flags, no calibrators, no layer.precision).
  int8 <- the same Q/DQ ONNX (layers outside Q/DQ run in FP32, as typed in the ONNX); high <- an
  FP16-typed copy of ``high.onnx`` made by :func:`convert_onnx_to_fp16` (FP32 I/O kept), written
  next to the other files as ``high_fp16.onnx``. A user-made FP16 model (for example from ModelOpt
  AutoCast) can be put there instead and is used as it is (its sha256 is recorded).

Every engine is written to a temporary file and renamed only once all variants are built; the
file name carries the engine key digest (``high_3fa2c1d0b9e8.engine``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpa_perception.backends.base import Placement
from dpa_perception.backends.tensorrt.engine_build import (
    BuildContext,
    BuiltEngine,
    build_one,
    make_logger,
    open_timing_cache,
)
from dpa_perception.backends.tensorrt.features import TrtFeatures, detect_features, import_tensorrt
from dpa_perception.backends.tensorrt.fp16 import FP16_ONNX_NAME, write_fp16_onnx
from dpa_perception.backends.tensorrt.key import EngineKey, is_engine_file_name
from dpa_perception.backends.tensorrt.plan import (
    SOURCE_VARIANT,
    VARIANTS,
    VariantPlan,
    parse_placement_plan,
    plan_variant,
    validate_placements,
)
from dpa_perception.backends.tensorrt.probe import MachineInfo, probe_machine
from dpa_perception.backends.tensorrt.profiles import make_profile
from dpa_perception.core.atomic_dir import write_file_atomically
from dpa_perception.core.errors import ConfigError, DpaError, ManifestError
from dpa_perception.core.manifest import Manifest, sha256_file, verify_file

SECTION_FORMAT_VERSION = 1
# The manifest variants a TensorRT build reads (and verifies): int8_trt.onnx and high.onnx.
SOURCE_VARIANTS: tuple[str, ...] = tuple(SOURCE_VARIANT[v] for v in VARIANTS)

LogFn = Callable[[str], None]


def _log_fn(log: Any) -> LogFn:
    if log is None:
        return logging.getLogger("dpa_perception.tensorrt").info
    if hasattr(log, "info") and callable(log.info):
        return log.info  # type: ignore[no-any-return]
    if callable(log):
        return log  # type: ignore[no-any-return]
    raise ConfigError(f"log must be a callable or a logging.Logger, got {type(log).__name__}")


# --------------------------------------------------------------------------------------------
# The build of a folder: both variants, then the timing cache, then the engines into place
# --------------------------------------------------------------------------------------------


def _source_onnx(engine_dir: Path, manifest: Manifest, plan: VariantPlan) -> tuple[Path, str]:
    entry = manifest.variants.get(plan.source)
    if entry is None:
        raise ManifestError(
            f"{engine_dir}/manifest.json has no {plan.source!r} variant, needed for the TensorRT "
            f"{plan.variant} engine: rebuild the folder with dpa-build"
        )
    path = manifest.variant_path(engine_dir, plan.source)
    digest = verify_file(path, entry.sha256, f"{plan.source} ONNX")
    return path, digest


def _build_input(engine_dir: Path, source: Path, plan: VariantPlan, log: LogFn) -> tuple[Path, str]:
    """The file TensorRT parses: the source itself, or its FP16-typed copy (strongly typed high)."""
    if not plan.fp16_onnx:
        return source, sha256_file(source)
    fp16 = engine_dir / FP16_ONNX_NAME
    if fp16.is_file() and fp16.stat().st_mtime >= source.stat().st_mtime:
        log(f"using the FP16-typed model {fp16.name} already in the folder")
        return fp16, sha256_file(fp16)
    log(f"writing an FP16-typed copy of {source.name} as {fp16.name} (strongly typed TensorRT)")
    return fp16, write_fp16_onnx(source, fp16)


def _build_variant(
    ctx: BuildContext, manifest: Manifest, plan: VariantPlan, machine: MachineInfo, batch: tuple[int, int | None]
) -> BuiltEngine:
    """Verify the source ONNX of ``plan``, key the engine for this machine and build it."""
    ctx.say("building " + plan.describe())
    source_path, source_sha = _source_onnx(ctx.engine_dir, manifest, plan)
    onnx_path, onnx_sha = _build_input(ctx.engine_dir, source_path, plan, ctx.say)
    model = manifest.model
    max_batch, opt_batch = batch
    profile = make_profile(
        model.input_hw,
        max_batch=max_batch,
        opt_batch=opt_batch,
        dynamic_batch=model.dynamic_batch,
        dynamic_hw=model.dynamic_hw,
        placement=plan.placement,
    )
    key = EngineKey.for_plan(plan, machine, model_sha256=model.sha256, source_sha256=source_sha,
                             input_name=model.input_name, profile=profile)
    built = build_one(ctx, plan, key, onnx_path)
    built.entry["built_from"] = {"file": onnx_path.name, "sha256": onnx_sha}
    return built


def _save_timing_cache(cache: Any, timing_cache: Path | None, engine_dir: Path, say: LogFn) -> str | None:
    """Save the shared cache; its name as the manifest records it (relative when in the folder)."""
    if timing_cache is None:
        return None
    tc = Path(timing_cache)
    write_file_atomically(tc, bytes(cache.serialize()))
    say(f"saved timing cache {timing_cache}")
    return tc.name if tc.parent.resolve() == engine_dir.resolve() else str(tc)


def _install(built: list[BuiltEngine], engine_dir: Path, say: LogFn) -> dict[str, Any]:
    """Rename the built engines into place and remove the engines of earlier builds."""
    engines: dict[str, Any] = {}
    for b in built:
        os.replace(b.tmp_path, engine_dir / b.key.file_name())
        engines[b.variant] = b.entry
    keep = {e["file"] for e in engines.values()}
    for stale in engine_dir.iterdir():
        if is_engine_file_name(stale.name) and stale.name not in keep:
            stale.unlink()
            say(f"removed stale engine {stale.name}")
    return engines


def _batch_limits(manifest: Manifest, max_batch: int, opt_batch: int | None, say: LogFn) -> tuple[int, int | None]:
    if manifest.model.engine_max_batch(max_batch) != max_batch:
        say(f"the model's batch dimension is static: building batch-1 engines (max batch {max_batch} ignored)")
        return 1, None
    return max_batch, opt_batch


def build_tensorrt_engines(
    engine_dir: Path,
    manifest: Manifest,
    *,
    placements: dict[str, Placement],
    max_batch: int,
    opt_batch: int | None,
    workspace_mib: int,
    timing_cache: Path | None,
    log: Any,
    trt_module: Any = None,
    machine: MachineInfo | None = None,
) -> dict:
    """Build the int8 and high TensorRT engines of ``engine_dir``; return the manifest section.

    ``trt_module`` and ``machine`` exist for tests (a fake ``tensorrt`` and a fixed TensorRT
    version / compute capability); normally both are found on this machine.
    """
    say = _log_fn(log)
    engine_dir = Path(engine_dir)
    trt = import_tensorrt() if trt_module is None else trt_module
    features: TrtFeatures = detect_features(trt)
    if machine is None:
        machine = probe_machine(trt)
    if workspace_mib < 1:
        raise ConfigError(f"workspace_mib must be >= 1, got {workspace_mib}")
    max_batch, opt_batch = _batch_limits(manifest, max_batch, opt_batch, say)

    messages: list[str] = []
    logger = make_logger(trt, say, messages)
    builder = trt.Builder(logger)
    num_dla = int(getattr(builder, "num_DLA_cores", 0) or 0)
    plan_places = validate_placements(placements, num_dla)
    say(
        f"TensorRT {machine.trt_version} on compute capability {machine.compute_capability}, "
        f"{num_dla} DLA core(s); {'weakly' if features.weakly_typed else 'strongly'} typed build"
    )
    cache = open_timing_cache(builder, timing_cache, say)
    ctx = BuildContext(trt, builder, logger, messages, cache, engine_dir, workspace_mib, say)
    built: list[BuiltEngine] = []
    try:
        for variant in VARIANTS:
            plan = plan_variant(features, variant, plan_places[variant])
            built.append(_build_variant(ctx, manifest, plan, machine, (max_batch, opt_batch)))
        # All built: save the cache, then move the engines into place.
        cache_name = _save_timing_cache(cache, timing_cache, engine_dir, say)
        engines = _install(built, engine_dir, say)
    finally:
        for b in built:
            if b.tmp_path.exists():
                b.tmp_path.unlink()
    return {
        "format_version": SECTION_FORMAT_VERSION,
        "trt_version": machine.trt_version,
        "compute_capability": machine.compute_capability,
        "strongly_typed": not features.weakly_typed,
        "num_dla_cores": num_dla,
        "max_batch": max_batch,
        "opt_batch": opt_batch if opt_batch is not None else max_batch,
        "workspace_mib": workspace_mib,
        "timing_cache": cache_name,
        "engines": engines,
    }


# --------------------------------------------------------------------------------------------
# Command line: the one definition of the TensorRT build options, used by this module's CLI and
# by ``dpa-build --backend tensorrt``
# --------------------------------------------------------------------------------------------


def add_tensorrt_args(parser: argparse.ArgumentParser) -> None:
    """Add the TensorRT build options and their defaults to ``parser`` (in their own group).

    Destinations: ``placement``, ``no_gpu_fallback``, ``max_batch``, ``opt_batch``,
    ``workspace_mib``, ``timing_cache``; :func:`run_tensorrt_build` reads exactly these.
    """
    g = parser.add_argument_group("TensorRT engines (--backend tensorrt)")
    g.add_argument("--placement", default="int8=gpu,high=gpu",
                   help="per-variant placement, e.g. int8=dla:0,high=gpu (default: both on gpu)")
    g.add_argument("--no-gpu-fallback", action="store_true",
                   help="DLA variants fail to build instead of running unsupported layers on the GPU")
    # a string default goes through type=int when the option is not given: a bad $DPA_TRT_MAX_BATCH
    # is argparse's one-line usage error, not a traceback
    g.add_argument("--max-batch", type=int, default=os.environ.get("DPA_TRT_MAX_BATCH", "8"),
                   help="largest batch (cameras per call) the engines accept (default 8, or $DPA_TRT_MAX_BATCH)")
    g.add_argument("--opt-batch", type=int, default=None, help="batch the tuner optimises for (default: max)")
    g.add_argument("--workspace-mib", type=int, default=1024, help="builder workspace limit in MiB (default 1024)")
    g.add_argument("--timing-cache", type=Path, default=None,
                   help="timing cache file, loaded and saved (default: ENGINE_DIR/timing.cache)")


def run_tensorrt_build(engine_dir: Path, args: argparse.Namespace, log: LogFn) -> Manifest:
    """Build the TensorRT engines of ``engine_dir`` with the options of :func:`add_tensorrt_args`,
    record them in its manifest (the ``tensorrt`` section) and return the updated manifest.

    Raises :class:`~dpa_perception.core.errors.DpaError` (one line) on any refusal.
    """
    engine_dir = Path(engine_dir)
    manifest = Manifest.load(engine_dir, verify=True, required=SOURCE_VARIANTS)
    placements = parse_placement_plan(args.placement, gpu_fallback=not args.no_gpu_fallback)
    section = build_tensorrt_engines(
        engine_dir,
        manifest,
        placements=placements,
        max_batch=args.max_batch,
        opt_batch=args.opt_batch,
        workspace_mib=args.workspace_mib,
        timing_cache=args.timing_cache or (engine_dir / "timing.cache"),
        log=log,
    )
    manifest.tensorrt = section
    manifest.write(engine_dir)
    for name, e in section["engines"].items():
        lay = e["layers"]
        log(
            f"dpa-build: {name}: {e['file']} {e['precision']} on {e['placement']} "
            f"({lay['on_dla']} layers on DLA, {lay['on_gpu']} on GPU)"
        )
    return manifest


def _print_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Build the TensorRT engines of an existing engine folder and record them in its manifest."""
    p = argparse.ArgumentParser(
        prog="dpa-build --backend tensorrt",
        description="Build TensorRT engines (int8 from int8_trt.onnx, high in FP16) on this machine.",
    )
    p.add_argument("engine_dir", type=Path, help="engine folder written by dpa-build")
    add_tensorrt_args(p)
    a = p.parse_args(argv)
    try:
        run_tensorrt_build(a.engine_dir, a, _print_stderr)
    except DpaError as exc:
        _print_stderr(f"dpa-build: error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
