"""The release gate: plan, build once, push by digest everywhere, smoke-test every platform from every
registry, and only then move the human tags onto the tested digest. Then report.

A run that fails at any step leaves no human tag on an untested digest: until `promote` nothing is tagged,
and the report says what was pushed where, so that a rerun (same commit, same digest) completes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from pipeline.build import BuildSpec, build, spec_for
from pipeline.config import LoadedConfig, RegistryConfig, load_config
from pipeline.dockerconfig import isolated_docker_config
from pipeline.engine import (
    REQUIRED_PLATFORMS,
    STAND_IN_DESCRIPTION,
    STAND_IN_LABEL,
    ensure_engine,
    offline_base_in_use,
    offline_base_notice,
    stand_in_bases,
    stand_in_refusal,
)
from pipeline.errors import ConfigError, PipelineError, PreflightError, SmokeError
from pipeline.github import DERIVED_CONFIG_NAME, mask_secrets, write_github_outputs
from pipeline.plan import ImagePlan, Plan, make_plan, require_clean
from pipeline.publish import (
    PromotionJournal,
    PromotionRequest,
    adopt_pushed,
    check_registries,
    find_tested_digest,
    login_all,
    promote_all,
    push_everywhere,
)
from pipeline.registry import ensure_registries, planned_registries
from pipeline.report import ImageOutcome, ReleaseReport, print_release_table
from pipeline.sign import GateSigning, require_signed_digests, start_signer
from pipeline.smoke import SmokeTarget, partial_report, run_smoke
from pipeline.structure import load_suite

log = logging.getLogger(__name__)
DEFAULT_REPORT = Path("release.json")


def _epoch(created: str) -> str | None:
    """SOURCE_DATE_EPOCH from the commit time, so that rebuilding a commit gives the same digest."""
    try:
        return str(int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()))
    except ValueError:
        return None


def _build_args(plan: Plan) -> dict[str, str]:
    epoch = _epoch(plan.created)
    return {"SOURCE_DATE_EPOCH": epoch} if epoch else {}


def _labels(image_plan: ImagePlan, stand_in_bases: list[str]) -> dict[str, str]:
    labels = dict(image_plan.labels)
    if stand_in_bases:
        labels[STAND_IN_LABEL] = f"{', '.join(stand_in_bases)}: {STAND_IN_DESCRIPTION}"
    return labels


def dry_run(config: LoadedConfig, plan: Plan) -> ReleaseReport:
    report = ReleaseReport.start(plan, mode="dry-run")
    for image_plan in plan.images:
        outcome = report.add_image(image_plan.name)
        outcome.planned_tags = {r.name: image_plan.references(r) for r in plan.registries}
        print(
            f"would build {image_plan.name} for {', '.join(image_plan.platforms)} from {config.dockerfile_path(config.image(image_plan.name))}"
        )
        for registry in plan.registries:
            print(f"would push it by digest to {registry.name} ({registry.repository(image_plan.name)})")
        for registry in plan.registries:
            for platform in image_plan.platforms:
                print(f"would pull and smoke-test {registry.name} {platform}")
        if config.pipeline.sign.method is not None:
            print(
                f"then would sign it ({config.pipeline.sign.method}) and attest its smoke results everywhere"
            )
        for registry in plan.registries:
            print(f"then would tag in {registry.name}: {', '.join(image_plan.tags)}")
    report.finish("dry-run")
    return report


def release(
    config: LoadedConfig,
    *,
    images: list[str] | None = None,
    allow_dirty: bool = False,
    fetch_tags: bool = False,
    no_push: bool = False,
    dry: bool = False,
    report_path: Path | None = DEFAULT_REPORT,
    environ: Mapping[str, str] | None = None,
    digests: Mapping[str, str] | None = None,
    require_signature: bool = False,
) -> ReleaseReport:
    """The gate. `digests` (image name -> index digest) releases indexes already pushed by a fan-out.

    The report is written before any work (which also proves its path writable), after every step, and at
    the end whatever happened, refusals and signals included: it is true at every moment.
    """
    environ = os.environ if environ is None else environ
    started = time.monotonic()
    mask_secrets(config.pipeline, environ)

    def planned() -> Plan:
        # Dirtiness is judged here and refused later (require_clean), after the report exists.
        plan = make_plan(
            config,
            registries=planned_registries(config),
            allow_dirty=True,
            fetch_tags=fetch_tags,
            environ=environ,
            own_files=_own_files(config, report_path),
        )
        return _only(plan, images)

    if dry:
        plan = planned()
        if plan.dirty and not allow_dirty:
            print(
                f"note: the tree has uncommitted changes ({plan.version}): a release would refuse without --allow-dirty"
            )
        problems = file_problems(config, plan, digests or {})
        if problems:
            raise PreflightError(problems)
        report = dry_run(config, plan)
        write_github_outputs(report, environ)
        return report
    mode = "local" if no_push else "publish"
    try:
        plan = planned()
    except PipelineError as error:
        report = ReleaseReport(version="", revision="", mode=mode, started_at=_now())
        report.finish("refused", error)
        _save_final(report, report_path, environ)
        raise
    report = ReleaseReport.start(plan, mode=mode)
    report.timings["plan"] = time.monotonic() - started
    save = _saver(report, report_path)
    save("start")  # before any work: an unwritable --report fails here, not after the tags moved
    try:
        if not allow_dirty:
            require_clean(plan)
        problems = file_problems(config, plan, digests or {})
        save("engine")
        # The variables are checked now; the key is opened meanwhile, in the background (a cosign run).
        pending_signer = start_signer(config, environ) if not no_push else None
        status = ensure_engine(builder=config.pipeline.build.builder, platforms=engine_platforms(plan))
        problems += platform_problems(plan, status.platforms)
        if problems:
            raise PreflightError(problems)
        registries: tuple[RegistryConfig, ...] = () if no_push else ensure_registries(config)
        plan = dataclasses.replace(plan, registries=registries or plan.registries)
        stand_in = offline_base_in_use(status)
        if stand_in:
            log.warning(offline_base_notice())
        if stand_in and not no_push:
            _refuse_stand_in_pushes(config, plan, registries, digests or {})
        with isolated_docker_config(), tempfile.TemporaryDirectory(prefix="pipeline-release-") as scratch:
            if not no_push:
                save("registries")
                check_registries(registries, environ)
                login_all(registries, environ)
            if digests and (require_signature or config.pipeline.sign.require):
                require_signed_digests(config, digests, registries, environ)
            signer = pending_signer() if pending_signer else None  # no key, wrong password: before any build
            tested: list[tuple[ImagePlan, str]] = []
            # Signing work is made during smoke, and dropped if the gate fails.
            with GateSigning(signer, registries, environ) as signing:
                for image_plan in plan.images:
                    digest = _build_push_and_smoke(
                        config,
                        plan,
                        image_plan,
                        registries,
                        report,
                        Path(scratch),
                        stand_in,
                        no_push,
                        environ,
                        (digests or {}).get(image_plan.name),
                        status.builder,
                        save,
                        signing,
                    )
                    tested.append((image_plan, digest))
                # Every image of the release passed before any tag moves: no release is half promoted.
                signing.publish(config, [(p.name, d) for p, d in tested], report)  # everywhere, or raises
            if not no_push:
                _promote(report, tested, registries, environ, save)
        report.finish("local" if no_push else "published")
    except BaseException as error:
        report.finish(_failure_status(error, report), error)
        raise
    finally:
        report.timings["total"] = time.monotonic() - started
        _save_final(report, report_path, environ)
    return report


def release_spec(
    config: LoadedConfig,
    plan: Plan,
    image_plan: ImagePlan,
    registries: tuple[RegistryConfig, ...],
    *,
    stand_in: bool,
    platforms: tuple[str, ...] | None = None,
    builder: str | None = None,
) -> BuildSpec:
    """The one build spec of an image in a release: its labels, annotations and SOURCE_DATE_EPOCH from the
    plan. `pipeline build --platform` (native fan-out) uses it too, so that a platform built on its own
    runner is byte for byte the one a single-job release builds.

    A subset of an image's platforms leaves out the annotations when the whole image is an index: a
    multi-platform build puts them on the index only, which `pipeline merge` writes for the fan-out.
    """
    image = config.image(image_plan.name)
    bases = stand_in_bases(config.dockerfile_path(image), image.build_args) if stand_in else []
    if bases:
        log.warning("%s: base %s is the offline busybox stand-in, NOT Alpine", image.name, ", ".join(bases))
    platforms = platforms or image_plan.platforms
    whole = set(platforms) == set(image_plan.platforms) or len(image_plan.platforms) == 1
    return spec_for(
        config,
        image,
        platforms=platforms,
        labels=_labels(image_plan, bases),
        annotations=image_plan.annotations if whole else {},
        extra_build_args=_build_args(plan),
        registries=registries,
        writable_cache_registry=bool(config.pipeline.registries),
        builder=builder,
    )


def engine_platforms(plan: Plan) -> tuple[str, ...]:
    """The platforms the engine check must find: only those this run builds (a native amd64 runner has no
    arm64), and of those the ones provisioning gives; any other is judged by `platform_problems`."""
    wanted = {platform for image in plan.images for platform in image.platforms}
    return tuple(platform for platform in REQUIRED_PLATFORMS if platform in wanted)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _failure_status(error: BaseException, report: ReleaseReport) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return "refused" if report.step in ("start", "engine") else "failed"


def _saver(report: ReleaseReport, path: Path | None) -> Callable[[str], None]:
    """`save(step)`: record the step the run is in and rewrite the report."""

    def save(step: str) -> None:
        report.step = step
        if path is None:
            return
        try:
            report.write(path)
        except OSError as error:
            raise ConfigError(
                f"--report {path}: cannot write the report ({error.strerror or error}); choose a writable path"
            ) from None

    return save


def _save_final(report: ReleaseReport, path: Path | None, environ: Mapping[str, str]) -> None:
    """The last word: the report file, the GitHub outputs and the table, each whatever the others did."""
    if path is not None:
        try:
            report.write(path)
        except OSError as error:
            log.error("could not write the report %s: %s", path, error.strerror or error)
    try:
        write_github_outputs(report, environ)
    except OSError as error:
        log.error("could not write the GitHub outputs: %s", error.strerror or error)
    print_release_table(report)


def file_problems(config: LoadedConfig, plan: Plan, digests: Mapping[str, str]) -> list[str]:
    """Everything about the images' files that can be known without building: every problem, one line each."""
    problems: list[str] = []
    for image_plan in plan.images:
        image = config.image(image_plan.name)
        where = f"{config.path}: images[{image.name}]"
        if image.name not in digests:
            context, dockerfile = config.context_dir(image), config.dockerfile_path(image)
            if not context.is_dir():
                problems.append(f"{where}.context: folder {context} does not exist")
            elif not dockerfile.is_file():
                problems.append(f"{where}.dockerfile: {dockerfile} does not exist")
        smoke = config.smoke_path(image)
        if image.smoke is not None and (smoke is None or not smoke.is_file()):
            problems.append(f"{where}.smoke: {smoke} does not exist")
        elif smoke is not None:
            try:
                load_suite(smoke)
            except PipelineError as error:
                problems.append(str(error).splitlines()[0])
    return problems


def platform_problems(plan: Plan, engine_platforms: list[str]) -> list[str]:
    """Every platform of every image is one the engine can build (natively or through QEMU)."""
    if not engine_platforms:
        return []  # the engine did not say; the build will
    return [
        f"images[{image.name}].platforms: {platform} cannot be built by this engine (it builds "
        f"{', '.join(engine_platforms)}); remove it or register QEMU emulation for it"
        for image in plan.images
        for platform in image.platforms
        if platform not in engine_platforms and f"{platform}/v8" not in engine_platforms
    ]


def _promote(
    report: ReleaseReport,
    tested: list[tuple[ImagePlan, str]],
    registries: tuple[RegistryConfig, ...],
    environ: Mapping[str, str],
    save: Callable[[str], None],
) -> None:
    """Move every image's tags in every registry, or none; the report follows every tag as it moves."""
    step = time.monotonic()
    revision = None if report.version.endswith("dirty") else report.revision
    journal = PromotionJournal()

    def record() -> None:
        for image_plan, _ in tested:
            outcome = report.image(image_plan.name)
            outcome.tags_moved = {
                registry.name: [
                    f"{registry.repository(image_plan.name)}:{tag}"
                    for tag in journal.moved.get((image_plan.name, registry.name), [])
                ]
                for registry in registries
            }
        report.promotion = {
            key: list(value)
            for key, value in (
                ("kept", journal.kept),
                ("restored", journal.restored),
                ("unrestored", journal.unrestored),
            )
            if value
        }
        save("promote")

    journal.on_change = record
    requests = [
        PromotionRequest(
            image_plan.name, digest, image_plan.tags, image_plan.floating, image_plan.version, revision
        )
        for image_plan, digest in tested
    ]
    try:
        promote_all(requests, registries, journal, environ)
    finally:
        journal.on_change = None
        record()
        report.add_timing("promote", time.monotonic() - step)


def _refuse_stand_in_pushes(
    config: LoadedConfig,
    plan: Plan,
    registries: tuple[RegistryConfig, ...],
    digests: Mapping[str, str],
) -> None:
    """Before any push: an image built on the offline stand-in goes to loopback registries only."""
    hosts = {registry.name: registry.host for registry in registries}
    for image_plan in plan.images:
        if image_plan.name in digests:
            continue  # built and pushed elsewhere (fan-out): its base is not this engine's
        image = config.image(image_plan.name)
        if not config.dockerfile_path(image).is_file():
            continue  # spec_for names the missing Dockerfile
        refusal = stand_in_refusal(
            image.name, stand_in_bases(config.dockerfile_path(image), image.build_args), hosts
        )
        if refusal is not None:
            raise PipelineError(refusal)


def _own_files(config: LoadedConfig, report_path: Path | None) -> list[Path]:
    """Files the pipeline itself writes in the checkout: they never make a build context dirty."""
    own = [report_path] if report_path is not None else []
    return own + ([config.path] if config.path.name == DERIVED_CONFIG_NAME else [])


def _only(plan: Plan, images: list[str] | None) -> Plan:
    if not images:
        return plan
    wanted = [i for i in plan.images if i.name in images or i.name.rsplit("/", 1)[-1] in images]
    unknown = set(images) - {i.name for i in wanted} - {i.name.rsplit("/", 1)[-1] for i in wanted}
    if unknown:
        raise PipelineError(f"--image {sorted(unknown)[0]!r} is not declared in the config")
    return dataclasses.replace(plan, images=tuple(wanted))


def _build_push_and_smoke(
    config: LoadedConfig,
    plan: Plan,
    image_plan: ImagePlan,
    registries: tuple[RegistryConfig, ...],
    report: ReleaseReport,
    scratch: Path,
    stand_in: bool,
    no_push: bool,
    environ: Mapping[str, str],
    existing_digest: str | None,
    builder: str | None,
    save: Callable[[str], None],
    signing: GateSigning,
) -> str:
    """Everything before promotion for one image; returns the tested index digest. The signing work for
    the digest starts as soon as it is known (`signing`), to be done by the time its smoke tests are."""
    image = config.image(image_plan.name)
    outcome: ImageOutcome = report.add_image(image.name)
    outcome.planned_tags = {r.name: image_plan.references(r) for r in registries}
    local_tag = f"{image.name}:{image_plan.tags[0] if image_plan.tags else 'dev'}"
    if existing_digest is None and not no_push and not plan.dirty:
        found = find_tested_digest(image.name, image_plan.tags, plan.revision, registries, environ)
        if found is not None:
            existing_digest, outcome.reused_from = found
            print(
                f"{image.name}: this commit's tested digest {existing_digest} is already published "
                f"({outcome.reused_from}); reusing it instead of building a new one"
            )
    if existing_digest is not None:
        # Native fan-out: the per-platform builds and the merge already pushed this index everywhere.
        published = adopt_pushed(image.name, existing_digest, registries, environ)
        missing = sorted(set(image_plan.platforms) - set(published.platform_digests))
        if missing:
            raise PipelineError(
                f"{image.name}@{existing_digest} lacks {', '.join(missing)}; merge every platform before releasing"
            )
        digest = existing_digest
    else:
        spec = release_spec(config, plan, image_plan, registries, stand_in=stand_in, builder=builder)
        step = time.monotonic()
        save(f"build {image.name}")
        built = build(spec, output_dir=None if no_push else scratch, load_as=local_tag if no_push else None)
        report.add_timing("build", time.monotonic() - step)
        digest = built.index_digest
        outcome.index_digest = digest  # recorded before the push: a failed push still says what it pushed
        if not no_push:
            signing.built(image.name, digest)  # the attestations open the key while the push runs
            step = time.monotonic()
            save(f"push {image.name}")
            published = push_everywhere(built, registries, environ)
            report.add_timing("push", time.monotonic() - step)
    outcome.index_digest = digest
    if no_push:
        targets = [
            SmokeTarget(image.name, "docker", local_tag, p, config.smoke_path(image))
            for p in image_plan.platforms
        ]
    else:
        outcome.platform_digests = published.platform_digests
        outcome.pushed = {push.registry: push.reference for push in published.pushes}
        targets = [
            SmokeTarget(
                image.name,
                registry.name,
                f"{registry.repository(image.name)}@{digest}",
                platform,
                config.smoke_path(image),
                (
                    f"{registry.repository(image.name)}@{published.platform_digests[platform]}"
                    if platform in published.platform_digests
                    else None  # the smoke runner resolves it and reports the platform missing
                ),
            )
            for registry in registries
            for platform in image_plan.platforms
        ]
    if not no_push:
        signing.pushed(image.name, digest)
    step = time.monotonic()
    save(f"smoke {image.name}")
    try:
        smoke_report = run_smoke(
            targets, timeout=config.pipeline.smoke.timeout, pull=not no_push, on_progress=log.info
        )
    except KeyboardInterrupt as error:
        partial = partial_report(error)
        if partial is not None:  # what ran before the signal stays in the report
            outcome.smoke, outcome.smoke_passed = partial.to_json(), False
        raise
    finally:
        report.add_timing("smoke", time.monotonic() - step)
    outcome.smoke = smoke_report.to_json()
    outcome.smoke_passed = smoke_report.passed
    save(f"smoked {image.name}")
    if not smoke_report.passed:
        raise SmokeError(
            f"smoke tests of {image.name} failed ({smoke_report.summary()}); no tag was moved, the untagged "
            f"digest {digest} stays for inspection"
        )
    return digest


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    report = release(
        config,
        images=args.image,
        allow_dirty=args.allow_dirty,
        fetch_tags=args.fetch_tags,
        no_push=args.no_push,
        dry=args.dry_run,
        report_path=None if args.dry_run else args.report,
        digests=parse_digests(config, args.digest or []),
        require_signature=args.require_signature,
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    return 0


def parse_digests(config: LoadedConfig, values: list[str]) -> dict[str, str]:
    digests: dict[str, str] = {}
    for value in values:
        name, _, digest = value.partition("=")
        if not digest.startswith("sha256:") or len(digest) != len("sha256:") + 64:
            raise PipelineError(f"--digest {value!r}: give IMAGE=sha256:<64 hex digits>")
        digests[config.image(name).name] = digest
    return digests


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "release", help="plan, build, push by digest, smoke-test every platform from every registry, then tag"
    )
    parser.add_argument("--image", action="append", help="only this image (repeatable; default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print what would happen; touch nothing")
    parser.add_argument("--no-push", action="store_true", help="build, load locally and smoke-test locally")
    parser.add_argument(
        "--allow-dirty", action="store_true", help="publish from a tree with uncommitted changes"
    )
    parser.add_argument(
        "--fetch-tags", action="store_true", help="fetch git tags first (shallow CI checkouts)"
    )
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="where to write the JSON report")
    parser.add_argument("--json", action="store_true", help="also print the report as JSON on stdout")
    parser.add_argument(
        "--digest",
        action="append",
        metavar="IMAGE=sha256:...",
        help="release this already pushed index (from `pipeline merge`) instead of building; repeatable",
    )
    parser.add_argument(
        "--require-signature",
        action="store_true",
        help="with --digest: verify each index's signature and smoke attestation in every registry first",
    )
    parser.set_defaults(handler=_run)
