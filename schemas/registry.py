"""The one shape of every extension point (judges, generation backends, divergences): a registry by
name whose entries are (params config class, factory), and the typed config section that picks one.

- ``Registry(what)``: ``register(name, params, factory)`` adds an entry; ``build(name, params)``
  validates the parameters with the entry's params class (a StrictModel: unknown keys refused)
  and calls ``factory(params, *args, **kwargs)``. A name it does not hold is an UnknownKindError.
- ``KindConfig``: a config section ``{kind: NAME, params: {...}}`` checked against a registry when
  the config is validated, so a wrong kind or parameter is refused by ``masters validate`` with
  its key (``judge.kind``, ``judge.params.model``), not at run time. After validation ``params`` is
  the entry's params instance.
- ``Registry.name()``: the type of a config value that is just a name (``backend: vllm``).

Params classes must be importable without the entry's optional packages (the factory imports
them), so validating a config never needs a GPU stack or an API client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from schemas.config import StrictModel
from schemas.errors import ConfigError, UnknownKindError

T = TypeVar("T")


class NoParams(StrictModel):
    """The parameters of an entry that takes none (any key is refused)."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    params: type[StrictModel]
    factory: Callable[..., T]  # factory(params instance, *args, **kwargs)


class Registry(MutableMapping[str, Entry[T]]):
    """Entries by name, in registration order (the order errors list them in)."""

    def __init__(self, what: str):
        self.what = what  # 'judge', 'generation backend', 'divergence': used in messages
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, params: type[StrictModel], factory: Callable[..., T]) -> None:
        self._entries[name] = Entry(name, params, factory)

    def entry(self, name: str, where: str | None = None) -> Entry[T]:
        """The entry ``name``; UnknownKindError listing the known names (prefixed by ``where``)."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            err = UnknownKindError(self.what, name, list(self._entries))
            if where:
                err.args = (f"{where}: {err}",)
            raise err from None

    def params(self, name: str, params: Mapping[str, Any] | BaseModel | None = None,
               where: str | None = None) -> StrictModel:
        """``params`` validated by entry ``name``'s params class; a ConfigError names ``where``."""
        entry = self.entry(name)
        if isinstance(params, entry.params):
            return params
        where = where or f"{self.what} {name!r} parameters"
        if isinstance(params, BaseModel):
            raise ConfigError(f"{where}: a {type(params).__name__} is not the parameters of {self.what} "
                              f"{name!r} (a {entry.params.__name__} or its keys)")
        return entry.params.parse({} if params is None else params, where=where)

    def build(self, name: str, params: Mapping[str, Any] | BaseModel | None = None, *args,
              where: str | None = None, **kwargs) -> T:
        """Entry ``name``'s factory called with its validated parameters (and ``args``, ``kwargs``)."""
        return self.entry(name).factory(self.params(name, params, where), *args, **kwargs)

    def check(self, name: str) -> str:
        """``name`` if registered; otherwise a validation error listing the known names (for config
        validators: pydantic reports it under the key being validated)."""
        if name not in self._entries:
            raise PydanticCustomError("unknown_kind", "{message}",
                                      {"message": str(UnknownKindError(self.what, name, list(self._entries)))})
        return name

    def name(self) -> Any:
        """The type of a config value naming one of the entries (checked when validated)."""
        return Annotated[str, AfterValidator(self.check)]

    # a mapping of name -> Entry; ``registry[name] = factory`` registers a judge/backend without parameters
    def __getitem__(self, name: str) -> Entry[T]:
        return self._entries[name]

    def __setitem__(self, name: str, value: Entry[T] | Callable[[], T]) -> None:
        if isinstance(value, Entry):
            self._entries[name] = value
        else:
            self.register(name, NoParams, lambda _params: value())

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"


class KindConfig(StrictModel):
    """A config section ``{kind: NAME, params: {...}}`` of ``registry`` (set by each subclass).
    ``params`` holds the entry's params instance once validated."""

    registry: ClassVar[Registry]

    kind: str = Field(description="the registry entry")
    params: Any = Field(default_factory=dict, validate_default=True, description="its parameters")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        return cls.registry.check(v)

    @field_validator("params")
    @classmethod
    def _typed_params(cls, v: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("kind")
        if kind is None:  # the kind was refused already: nothing to check the parameters against
            return v
        # a ValidationError here is reported under this section's params key, field by field
        return cls.registry[kind].params.model_validate({} if v is None else v)
