"""Type stubs for pyrs: what a handler receives and may return or raise."""

from typing import (
    Any, AsyncIterator, Iterator, List, Mapping, Optional, Sequence, Tuple, Union,
)

__version__: str

Body = Union[str, bytes, bytearray, memoryview, dict, list, None]
# A streamed body: its parts go to the client as they are produced.
Parts = Union[Iterator[Union[str, bytes]], AsyncIterator[Union[str, bytes]]]
HeaderValue = Union[str, bytes, int]
HeaderFields = Union[Mapping[str, HeaderValue], Sequence[Tuple[str, HeaderValue]], None]

class Headers:
    """Request header fields in arrival order; lookups ignore case."""

    def __getitem__(self, name: str) -> str: ...
    def get(self, name: str, default: Optional[Any] = None) -> Optional[Any]: ...
    def getall(self, name: str) -> List[str]: ...
    def __contains__(self, name: object) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def keys(self) -> List[str]: ...
    def values(self) -> List[str]: ...
    def items(self) -> List[Tuple[str, str]]: ...

class Request:
    """A request as a handler sees it (immutable)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def query(self) -> dict[str, List[str]]: ...
    @property
    def headers(self) -> Headers: ...
    @property
    def body(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...
    @property
    def http_version(self) -> str: ...
    @property
    def remote_addr(self) -> str: ...
    @property
    def remote_port(self) -> int: ...

class Response:
    """Full control over a response; `body` may be a generator (streamed)."""

    body: Union[Body, Parts]
    status: int
    headers: HeaderFields
    content_type: Optional[str]
    def __init__(
        self,
        body: Union[Body, Parts] = None,
        status: int = 200,
        headers: HeaderFields = None,
        content_type: Optional[str] = None,
    ) -> None: ...

class HTTPError(Exception):
    """Raise in a handler to answer with `status` instead of a 500."""

    status: int
    body: Body
    headers: HeaderFields
    content_type: Optional[str]
    def __init__(
        self,
        status: int,
        body: Body = None,
        headers: HeaderFields = None,
        content_type: Optional[str] = None,
    ) -> None: ...

def main(argv: Optional[Sequence[str]] = None) -> None:
    """Runs the `pyrs` command in this interpreter and exits with its status."""
