"""Two costs Hydra 1.3 pays on every composition (a command composes once, a sweep once per job) and need not.

- OmegaConf reads every config file with PyYAML's pure-Python parser, about a sixth of a composition.
  The loader installed here is OmegaConf's own class (its float rules, no timestamps, its duplicate-key
  refusal) with libyaml's parser under it. A file libyaml refuses is read again by the pure-Python
  parser, so a syntax error keeps the message it always had, which names more (the tab, the missing
  alias) than libyaml's.
- Each composition deep-copies Hydra's config repository, and with it the ConfigStore singleton and
  every structured config in it (Hydra's own and bon's schemas): ~6 ms of ~80. The store is only read
  while composing (each load hands out a copy of the stored node), so the copy shares it instead, as
  newer Hydra does (facebookresearch/hydra#2928).
"""
from __future__ import annotations

import io
from typing import Any


def install() -> None:
    """Both changes. Idempotent: bon.config.conf_dir, which every command calls before composing, calls it."""
    _share_the_config_store()
    _parse_yaml_with_libyaml()


def _share_the_config_store() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.__deepcopy__ = lambda self, memo: self  # type: ignore[attr-defined]


def _parse_yaml_with_libyaml() -> None:
    """OmegaConf.load and OmegaConf.create(<yaml text>) parse with libyaml; a no-op where PyYAML was
    built without it."""
    import yaml
    from omegaconf import _utils

    if hasattr(_utils.get_yaml_loader, "python_loader") or not getattr(yaml, "__with_libyaml__", False):
        return
    python_loader = _utils.get_yaml_loader()  # OmegaConf builds a new class on every call: build it once

    class LibyamlLoader(yaml.cyaml.CParser, python_loader):  # type: ignore[misc, valid-type]
        def __init__(self, stream: Any) -> None:
            text = stream.read() if hasattr(stream, "read") else stream
            self._source = (text, getattr(stream, "name", None))
            yaml.cyaml.CParser.__init__(self, _named(*self._source))
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

        def get_single_data(self) -> Any:
            try:
                return super().get_single_data()
            except yaml.YAMLError:
                yaml.load(_named(*self._source), Loader=python_loader)  # raises the pure-Python parser's error
                raise

    def get_yaml_loader() -> type:
        return LibyamlLoader

    get_yaml_loader.python_loader = python_loader  # type: ignore[attr-defined]  # OmegaConf's, for comparison
    _utils.get_yaml_loader = get_yaml_loader


def _named(text: str | bytes, name: str | None) -> Any:
    """The text as a stream that carries the file's name, which both parsers put in their error marks."""
    if name is None:
        return text
    stream: Any = io.BytesIO(text) if isinstance(text, bytes) else io.StringIO(text)
    stream.name = name
    return stream
