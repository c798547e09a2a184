"""`orch keys create` and `orch bundle export | verify | import`: signed, deterministic audit
bundles of a tenant's history (issue 13, docs/bundles.md)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from core import control
from core.domain import bundle, bundle_verify, errors
from worker.cli.common import Context, add_json, add_tenant, iso_time, print_json


def cmd_keys_create(ctx: Context) -> int:
    key_path, pub_path, fp = bundle.write_key_pair(Path(ctx.args.out))
    print(f"wrote {key_path} (private, mode 600: keep it out of the ledger and of logs)")
    print(f"wrote {pub_path} (public: give it to whoever verifies bundles)")
    print(f"fingerprint sha256:{fp}")
    return 0


class _Progress:
    """Lines written (or checked) per file, on standard error: one line rewritten in place on
    a terminal, a line every few seconds otherwise; nothing with --quiet."""

    def __init__(self, verb: str, quiet: bool) -> None:
        self.verb, self.quiet, self.tty = verb, quiet, sys.stderr.isatty()
        self.last, self.stage = 0.0, ""

    def __call__(self, stage: str, n: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if stage == self.stage and now - self.last < (0.2 if self.tty else 5.0):
            return
        if self.tty and stage != self.stage and self.stage:
            sys.stderr.write("\n")
        self.stage, self.last = stage, now
        text = f"{self.verb} {stage}: {n:,} lines" if stage != "archive" else f"{self.verb}: writing the archive"
        sys.stderr.write(("\r" + text + "\x1b[K") if self.tty else text + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.stage and not self.quiet:
            sys.stderr.write("\n")


def _signing_key(a: Any) -> Any:
    source = a.key or os.environ.get("ORCH_SIGNING_KEY")
    if not source:
        raise errors.InvalidInput("give the signing key: --key KEYFILE or ORCH_SIGNING_KEY (a path or the PEM text)")
    return bundle.load_private_key(source)


def _public_keys(a: Any) -> list[Any]:
    return [bundle.load_public_key(p) for p in a.pubkey]


def cmd_export(ctx: Context) -> int:
    a = ctx.args
    key = _signing_key(a)
    progress = _Progress("exporting", a.quiet or a.json)
    try:
        result = control.export_bundle(
            ctx.engine,
            ctx.principal,
            tenant=a.tenant,
            out=Path(a.out),
            key=key,
            range_from=None if a.from_ is None else iso_time(a.from_, "--from"),
            range_to=None if a.to is None else iso_time(a.to, "--to"),
            with_artifacts=a.with_artifacts,
            progress=progress,
        )
    finally:
        progress.done()
    if a.json:
        print_json(result)
        return 0
    lines = sum(result.lines.values())
    print(f"wrote {result.path}: {result.size:,} bytes, {lines:,} lines of tenant {result.tenant}")
    print(f"range [{result.range_from or 'the beginning'}, {result.range_to})")
    print(f"sha256 {result.sha256}")
    print(f"signed with key sha256:{result.fingerprint}")
    return 0


def _print_report(report: bundle_verify.Report) -> None:
    for step in report.steps:
        print(f"{'ok  ' if step.ok else 'FAIL'} {step.name}: {step.detail}")


def cmd_verify(ctx: Context) -> int:
    a = ctx.args
    keys = _public_keys(a)
    progress = _Progress("checking", a.quiet or a.json)
    try:
        report = control.verify_bundle(Path(a.file), keys, progress=progress)
    finally:
        progress.done()
    if a.json:
        print_json(
            {
                "ok": report.ok,
                "fingerprint": report.fingerprint,
                "steps": report.steps,
                "failure": report.failure,
            }
        )
    elif report.ok:
        _print_report(report)
        print(f"bundle verified: every step passed (key sha256:{report.fingerprint})")
    if not report.ok:
        print(f"orch: error: bundle rejected: {report.failure}", file=sys.stderr)
        return 1
    return 0


def cmd_import(ctx: Context) -> int:
    a = ctx.args
    keys = _public_keys(a)
    progress = _Progress("importing", a.quiet or a.json)
    try:
        result = control.import_bundle(ctx.engine, ctx.principal, path=Path(a.file), keys=keys, progress=progress)
    finally:
        progress.done()
    if a.json:
        print_json(result)
        return 0
    total = sum(result.rows.values())
    print(
        f"imported tenant {result.tenant}, range [{result.range_from or 'the beginning'}, {result.range_to}): "
        f"{total:,} rows ({', '.join(f'{k} {v:,}' for k, v in result.rows.items() if v)})"
    )
    print(f"verified with key sha256:{result.fingerprint}")
    return 0


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="signing keys of audit bundles")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = ksub.add_parser("create", help="write a new Ed25519 key pair: DIR/signing.key and DIR/signing.pub")
    create.add_argument("--out", required=True, metavar="DIR", help="directory to write the two files to")
    create.set_defaults(fn=cmd_keys_create)

    b = sub.add_parser("bundle", help="signed, deterministic audit bundles of a tenant's history")
    bsub = b.add_subparsers(dest="bundle_command", required=True, metavar="COMMAND")
    ex = bsub.add_parser("export", help="write a tenant's records in [--from, --to) as a signed .tar.gz (orch:export)")
    add_tenant(ex, required=True)
    ex.add_argument("--from", dest="from_", metavar="ISO", help="start of the range (default: the beginning)")
    ex.add_argument(
        "--to", metavar="ISO", help="end of the range, not in the future (default: the start of this minute)"
    )
    ex.add_argument("--key", metavar="KEYFILE", help="the Ed25519 private key (default: ORCH_SIGNING_KEY)")
    ex.add_argument("--out", required=True, metavar="FILE", help="the bundle to write (never overwritten)")
    ex.add_argument("--with-artifacts", action="store_true", help="also the artifacts' bytes, under artifacts/<sha256>")
    ex.add_argument("--quiet", action="store_true", help="no progress on standard error")
    add_json(ex)
    ex.set_defaults(fn=cmd_export)

    ve = bsub.add_parser("verify", help="check a bundle offline, every step, fail closed (no database)")
    ve.add_argument("file", metavar="FILE", help="the bundle (.tar.gz) to check")
    ve.add_argument(
        "--pubkey", action="append", required=True, metavar="PUBFILE", help="a public key; repeat for a keyring"
    )
    ve.add_argument("--quiet", action="store_true", help="no progress on standard error")
    add_json(ve)
    ve.set_defaults(fn=cmd_verify)

    im = bsub.add_parser("import", help="verify a bundle, then load it into an empty ledger (orch:export)")
    im.add_argument("file", metavar="FILE", help="the bundle (.tar.gz) to import")
    im.add_argument(
        "--pubkey", action="append", required=True, metavar="PUBFILE", help="a public key; repeat for a keyring"
    )
    im.add_argument("--quiet", action="store_true", help="no progress on standard error")
    add_json(im)
    im.set_defaults(fn=cmd_import)
