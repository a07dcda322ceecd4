"""The built-in selectors, each composed from named filters and keys.

Adding a selector means adding one line here or one YAML file under conf/selector/.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bon.errors import BonError, unknown_choice
from bon.selectors.spec import Filter, Key, RankKey, Selector, Votes

FILTERS: dict[str, Filter] = {
    "judged_success": Filter("final_pred", "==", 1),  # the ORM says the trajectory succeeded
    "no_error": Filter("n_neg", "==", 0),  # the PRM found no -1 step
    "judge_ok": Filter("judge_ok", "==", 1),  # the judge call did not fail
}

KEYS: dict[str, RankKey] = {
    "pos_count": Key("n_pos"),
    "pos_ratio": Key("pos_ratio"),
    "clean_prefix": Key("clean_prefix"),  # later first -1 is better; no -1 is best
    "fewest_errors": Key("n_neg", descending=False),
    "shortest": Key("n_steps", descending=False),
    "votes": Votes(),
    "success": Key("success"),  # ground truth: only for oracles
}

final = Selector("final", (FILTERS["judged_success"],), description="first candidate the ORM calls a success")
pos_ratio = Selector("pos_ratio", rank=(KEYS["pos_ratio"],), description="%Pos: highest share of +1 steps")
_BUILTIN = (
    Selector("random", description="uniform pick; its expected accuracy is the mean success"),
    final,
    Selector("pos_count", rank=(KEYS["pos_count"],), description="#Pos: most +1 steps"),
    pos_ratio,
    Selector("two_stage", final.filters, pos_ratio.rank,
             description="Final -> %Pos: highest share of +1 among ORM successes"),
    Selector("clean_prefix", final.filters, (KEYS["clean_prefix"], *pos_ratio.rank),
             description="among ORM successes, the latest first -1, then %Pos"),
    Selector("majority", rank=(KEYS["votes"],), description="most frequent normalised final answer"),
    Selector("weighted_majority", rank=(Votes(weight="pos_ratio"),), description="answers vote with weight %Pos"),
    Selector("pass_at_n", rank=(KEYS["success"],), description="oracle: correct if any candidate is"),
)
SELECTORS: dict[str, Selector] = {s.name: s for s in _BUILTIN}


def get(name: str) -> Selector:
    """A built-in selector by name."""
    try:
        return SELECTORS[name]
    except KeyError:
        raise unknown_choice("selector", name, SELECTORS) from None


def _filter(spec: Any, where: str) -> Filter:
    if isinstance(spec, str):
        if spec not in FILTERS:
            raise unknown_choice(f"filter in {where}", spec, FILTERS)
        return FILTERS[spec]
    if isinstance(spec, Mapping) and "from" in spec:
        return _filter(spec["from"], where)
    return Filter(**_fields(spec, where, ("column", "op", "value"), required=("column",)))


def _key(spec: Any, where: str) -> RankKey:
    if isinstance(spec, str):
        if spec not in KEYS:
            raise unknown_choice(f"rank key in {where}", spec, KEYS)
        return KEYS[spec]
    fields = _fields(spec, where, ("column", "descending", "missing", "votes", "weight", "normalizer"))
    if fields.pop("votes", False):
        extra = {"column", "descending", "missing"} & set(fields)
        if extra:
            raise BonError(f"{where}: {sorted(extra)} do not apply to a votes key; it takes weight and normalizer")
        return Votes(weight=fields.get("weight"), normalizer=fields.get("normalizer", "squad"))
    extra = {"weight", "normalizer"} & set(fields)
    if extra:
        raise BonError(f"{where}: {sorted(extra)} only apply to a votes key (votes: true)")
    if "column" not in fields:
        raise BonError(f"{where}: a rank key needs `column` (or `votes: true`)")
    return Key(**fields)


def _fields(spec: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise BonError(f"{where}: expected a name or a mapping, got {spec!r}")
    unknown = set(spec) - set(allowed)
    if unknown:
        raise BonError(f"{where}: unknown field(s) {sorted(unknown)}; valid fields: {', '.join(allowed)}")
    missing = [f for f in required if f not in spec]
    if missing:
        raise BonError(f"{where}: missing field(s) {missing}; valid fields: {', '.join(allowed)}")
    return dict(spec)


def from_config(cfg: Mapping[str, Any]) -> Selector:
    """Build a selector from a config mapping (a `conf/selector/*.yaml` file).

    `name` alone names a built-in. Otherwise `filters` and `rank` list parts, each either
    the name of a built-in part (see FILTERS and KEYS) or an inline mapping, e.g.
    `{column: clean_prefix}` or `{votes: true, weight: pos_ratio}`. `extends: <selector>`
    starts from a built-in and replaces only the parts given.
    """
    cfg = dict(cfg)
    name = cfg.get("name")
    if not name:
        raise BonError("selector config needs a `name`")
    where = f"selector {name!r}"
    unknown = set(cfg) - {"name", "filters", "rank", "extends", "description", "verdicts", "fallback"}
    if unknown:
        raise BonError(f"{where}: unknown field(s) {sorted(unknown)}; "
                       f"valid: name, extends, filters, rank, description, "
                       f"verdicts, fallback")
    if cfg.get("verdicts") is not None or cfg.get("fallback") is not None:
        return _comparing(cfg, where)
    if "filters" not in cfg and "rank" not in cfg and "extends" not in cfg:
        return get(name)
    base = _base(cfg.get("extends"), name, where)
    filters = tuple(_filter(f, where) for f in _parts(cfg, "filters", where)) if cfg.get("filters") is not None \
        else base.filters
    rank = tuple(_key(k, where) for k in _parts(cfg, "rank", where)) if cfg.get("rank") is not None else base.rank
    selector = Selector(name, filters, rank, description=cfg.get("description") or base.description)
    builtin = SELECTORS.get(name)
    if builtin is not None and (builtin.filters, builtin.rank) != (selector.filters, selector.rank):
        raise BonError(f"{where}: {name!r} is a built-in selector, and this config defines it differently, so reports "
                       f"would show your selector under the built-in's name; give it a name of its own "
                       f"(e.g. name: my_{name}), with `extends: {name}` to reuse the built-in's parts")
    return selector


VERDICTS = ("listwise", "pairwise")


def _comparing(cfg: Mapping[str, Any], where: str) -> Selector:
    """A selector that takes a comparing judge's pick per task (bon.verdicts) and lets `fallback` (a
    built-in) decide the tasks without one: the pick is a filter in front of the fallback's parts."""
    verdicts, fallback = cfg.get("verdicts"), cfg.get("fallback") or "two_stage"
    if verdicts not in VERDICTS:
        raise unknown_choice(f"{where}: verdicts", verdicts, VERDICTS)
    if "filters" in cfg or "rank" in cfg or "extends" in cfg:
        raise BonError(f"{where}: a selector with `verdicts` takes `fallback: <selector>` instead of filters, rank "
                       f"or extends")
    if not isinstance(fallback, str) or fallback not in SELECTORS:
        raise unknown_choice(f"{where}: fallback", fallback, SELECTORS)
    base = SELECTORS[fallback]
    return Selector(cfg["name"], (Filter("listwise_pick", "==", 1), *base.filters), base.rank,
                    description=cfg.get("description") or f"{verdicts} judge's pick; without one, {fallback}",
                    verdicts=verdicts, fallback=fallback)


def _base(extends: Any, name: str, where: str) -> Selector:
    """The built-in a config extends (or an empty selector); only built-ins can be extended."""
    if not extends:
        return Selector(name)
    if extends == name and name not in SELECTORS:
        raise BonError(f"{where}: `extends: {name}` names the selector itself; extends takes a built-in selector: "
                       f"{', '.join(sorted(SELECTORS))}")
    if not isinstance(extends, str) or extends not in SELECTORS:
        raise unknown_choice(f"selector in {where}: extends", extends, SELECTORS)
    return SELECTORS[extends]


def _parts(cfg: Mapping[str, Any], field: str, where: str) -> list[Any]:
    """`filters` / `rank` as a list; one name or one inline mapping counts as a list of one."""
    value = cfg[field]
    if isinstance(value, (str, Mapping)):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise BonError(f"{where}: {field} must be a list of names or mappings, got {value!r}")
    return list(value)
