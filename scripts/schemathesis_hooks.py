"""schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Schema-valid requests are sent as a careful client would write them, in the two ways a JSON
Schema cannot state:
- JSON Schema cannot tell 118 from 118.0 (both are integers to it), while the API takes integer
  fields as integer literals only and refuses 118.0 (docs/reference/api.md §1.5): integral floats
  are written as integers.
- Bodies are I-JSON (RFC 7493): a number beyond the IEEE double range or a lone surrogate in a
  string is refused as invalid JSON, wherever it appears (unknown fields included). Such numbers
  are brought into range and lone surrogates replaced by U+FFFD.
- A create's `secretEnv` must not repeat a key, which a schema cannot say of `KEY=value` strings:
  later entries for a key already given are dropped.
- A create's `peerLinks` name VMs that must exist, run and ship a valid manifest, which no generated
  id does: they are left out of positive cases (crates/manager/tests/e2e_peers.rs covers links).
"""

import schemathesis

_DOUBLE_MAX = 1.7976931348623157e308


def _i_json(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and abs(value) > _DOUBLE_MAX:
        return 2**53 if value > 0 else -(2**53)
    if isinstance(value, str):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    if isinstance(value, dict):
        return {_i_json(k): _i_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_i_json(v) for v in value]
    return value


def _unique_secret_keys(body):
    entries = body.get("secretEnv")
    if not isinstance(entries, list):
        return body
    seen, kept = set(), []
    for e in entries:
        key = e.split("=", 1)[0] if isinstance(e, str) else e
        if key not in seen:
            seen.add(key)
            kept.append(e)
    return {**body, "secretEnv": kept}


@schemathesis.hook
def before_call(context, case, kwargs):
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive and isinstance(case.body, (dict, list)):
        case.body = _i_json(case.body)
        if isinstance(case.body, dict):
            case.body = _unique_secret_keys(case.body)
            if case.operation.path == "/v1/vms" and case.operation.method.upper() == "POST":
                case.body.pop("peerLinks", None)
