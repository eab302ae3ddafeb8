"""The o200k vocabulary that OpenAI's harmony library (``openai-harmony``) needs, without
downloading it.

The library loads ``o200k_base.tiktoken`` (one ``base64(token bytes) rank`` line per
token) from the directory ``TIKTOKEN_ENCODINGS_BASE`` names, and checks its SHA-256;
without one it would fetch it from the internet, which Kathan never does. Two offline
sources give the same file, byte for byte:

- a gpt-oss GGUF's own vocabulary (its first 199,998 tokens are o200k's, in rank order):
  ``from_pieces``, what ``kathan serve`` writes for a gpt-oss model;
- the ``o200k_base.json`` of the npm package ``tiktoken`` (its ranks, run-length
  encoded): ``from_npm_json``, what ``make`` writes for the tests (``python -m
  kathan.engine.harmony_vocab tiktoken-package.json DIR``).

Either way ``write`` checks the digest the library will check, so a wrong file is a
clear error here, not a download attempt there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

FILE = "o200k_base.tiktoken"
SIZE = 199_998  # o200k's ordinary tokens; the specials come after them
SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
ENV = "TIKTOKEN_ENCODINGS_BASE"


class VocabularyError(Exception):
    """The vocabulary could not be made, or is not o200k's."""


def from_pieces(pieces: Sequence[bytes]) -> bytes:
    """The file from a model's token pieces (id -> bytes), its first ``SIZE`` tokens."""
    if len(pieces) < SIZE:
        raise VocabularyError(f"the model has {len(pieces)} tokens; o200k has {SIZE}")
    return b"".join(base64.b64encode(piece) + b" %d\n" % rank
                    for rank, piece in enumerate(pieces[:SIZE]))


def from_npm_json(raw: str) -> bytes:
    """The file from the npm ``tiktoken`` package's ``encoders/o200k_base.json``, whose
    ``bpe_ranks`` holds lines ``<tag> <first rank> <base64 token> <base64 token> ...``."""
    ranks = json.loads(raw)["bpe_ranks"]
    out: list[bytes] = []
    for line in ranks.split("\n"):
        if not line:
            continue
        _, first, *tokens = line.split(" ")
        out += [f"{token} {int(first) + i}\n".encode() for i, token in enumerate(tokens)]
    return b"".join(out)


def write(content: bytes, directory: Path) -> Path:
    """``content`` as ``directory/o200k_base.tiktoken``, once its digest is o200k's."""
    digest = hashlib.sha256(content).hexdigest()
    if digest != SHA256:
        raise VocabularyError(
            f"the vocabulary is not o200k's (sha256 {digest[:12]}..., expected "
            f"{SHA256[:12]}...)")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE
    partial = path.with_suffix(".partial")
    partial.write_bytes(content)
    partial.replace(path)
    return path


def present(directory: Path) -> bool:
    path = directory / FILE
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == SHA256


def provide(pieces: Sequence[bytes], cache: Path) -> Path:
    """The directory for ``TIKTOKEN_ENCODINGS_BASE``: the one it names already when it
    holds the file, else ``cache``, written from ``pieces`` when missing there."""
    named = os.environ.get(ENV)
    if named and present(Path(named)):
        return Path(named)
    if not present(cache):
        write(from_pieces(pieces), cache)
    os.environ[ENV] = str(cache)
    return cache


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m kathan.engine.harmony_vocab O200K_BASE_JSON DIRECTORY",
              file=sys.stderr)
        return 2
    try:
        path = write(from_npm_json(Path(argv[0]).read_text()), Path(argv[1]))
    except (OSError, ValueError, KeyError, VocabularyError) as exc:
        print(f"harmony_vocab: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
