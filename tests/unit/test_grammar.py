import pytest

from kathan.engine.grammar import GrammarError, json_object_grammar, json_schema_grammar


def test_bounded_integer_is_enumerated() -> None:
    grammar = json_schema_grammar({"type": "integer", "minimum": 2, "exclusiveMaximum": 5})
    assert '"2"' in grammar and '"4"' in grammar and '"5"' not in grammar


def test_property_named_like_a_keyword_is_not_a_bound() -> None:
    schema = {"type": "object", "properties": {"minimum": {"type": "string"}}}
    assert "minimum" in json_schema_grammar(schema)


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "number", "minimum": 0}, "can be enforced only on integers"),
        ({"type": "integer", "minimum": 0}, "both bounds"),
        ({"type": "integer", "minimum": 0, "maximum": 10**6}, "spanning at most"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "no integer"),
        ({"type": "nonsense"}, "cannot be compiled"),
        ({"$ref": "#/$defs/missing"}, "cannot be compiled"),
    ],
)
def test_schemas_that_cannot_be_enforced_say_why(schema: dict[str, object], reason: str) -> None:
    with pytest.raises(GrammarError, match=reason):
        json_schema_grammar(schema)


def test_json_object_grammar_roots_at_an_object() -> None:
    assert "root ::= object" in json_object_grammar()


def test_strings_exclude_raw_control_characters() -> None:
    for grammar in (json_object_grammar(), json_schema_grammar({"type": "string"})):
        char_rule = next(line for line in grammar.splitlines() if line.startswith("char ::="))
        assert "\\x00-\\x1F" in char_rule
