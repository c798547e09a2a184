"""`orch keys create`: the Ed25519 key pair that signs audit bundles (issue 13; export,
verify and import of bundles are not built yet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.domain import bundle
from worker.cli.common import Context


def cmd_keys_create(ctx: Context) -> int:
    key_path, pub_path, fp = bundle.write_key_pair(Path(ctx.args.out))
    print(f"wrote {key_path} (private, mode 600: keep it out of the ledger and of logs)")
    print(f"wrote {pub_path} (public: give it to whoever verifies bundles)")
    print(f"fingerprint sha256:{fp}")
    return 0


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="signing keys of audit bundles")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = ksub.add_parser("create", help="write a new Ed25519 key pair: DIR/signing.key and DIR/signing.pub")
    create.add_argument("--out", required=True, metavar="DIR", help="directory to write the two files to")
    create.set_defaults(fn=cmd_keys_create)
