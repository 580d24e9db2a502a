"""The HTTP client the `binwatch jobs` and `binwatch tuning` commands share, and their common options.

These commands only talk HTTP, so they work from any laptop against a remote deployment.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False)

Url = Annotated[
    str,
    typer.Option("--url", envvar="BINWATCH_API_URL", help="binwatch API base URL.", show_default=True),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="BINWATCH_API_KEY", help="API key with the 'train' scope.", show_default=False
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of tables.")]
DEFAULT_URL = "http://127.0.0.1:8000"


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


class Api:
    """A thin httpx client that turns problem+json answers into one readable line."""

    def __init__(self, url: str, api_key: str | None, timeout: float = 30.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise fail(
                f"cannot reach the binwatch API at {self.url} ({exc}); set --url or BINWATCH_API_URL"
            ) from exc
        if response.status_code >= 400:
            detail = response.text
            try:
                body = response.json()
                detail = body.get("detail") or detail
                if body.get("errors"):
                    detail += "".join(
                        f"\n  {'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}"
                        for e in body["errors"]
                    )
            except ValueError:
                pass
            raise fail(f"{response.status_code} {response.reason_phrase}: {detail}", code=1)
        return response.json()
