"""The seed corpus under tests/fuzz/corpus/: real-looking inputs every fuzz test starts from."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def corpus_commands() -> list[str]:
    """Real-looking Claude Code / Codex tool-call command lines."""
    data = json.loads((CORPUS / "commands.json").read_text())
    return list(data["commands"])


def corpus_policies() -> list[str]:
    """Seed policy texts: good, bad, YAML tricks, the one-line annotation form."""
    return [p.read_text() for p in sorted((CORPUS / "policies").iterdir()) if p.is_file()]
