"""Reading server-sent events (the API's event streams), line by line, for any client."""

from __future__ import annotations

import json
from typing import Any


class SseParser:
    """Feed it the stream's lines; it returns (event, data) when a message is complete, else None."""

    def __init__(self) -> None:
        self.kind: str = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, dict[str, Any]] | None:
        if not line:
            out = (self.kind, json.loads("\n".join(self.data))) if self.data else None
            self.kind, self.data = "message", []
            return out
        if line.startswith("event:"):
            self.kind = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].strip())
        return None
