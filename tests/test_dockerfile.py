"""The Dockerfile grammar (isobox.images.dockerfile): directives, continuations, comments,
heredocs, flags, exec and shell forms, name=value pairs and environment replacement, with
the Docker reference's own examples; hypothesis for the laws and for hostile text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isobox.images.dockerfile import DockerfileError, expand, name_values, parse, parse_line, split_words

pytestmark = pytest.mark.unit


def keywords(text: str) -> list:
    return [(i.keyword, i.args) for i in parse(text).instructions]


def test_instructions_are_case_insensitive_and_comments_are_skipped() -> None:
    assert keywords("# a comment\nfrom busybox\n  # indented comment\nrun echo hi # not a comment\n") == [
        ("FROM", "busybox"), ("RUN", "echo hi # not a comment")]


def test_line_numbers_and_unknown_instructions_are_named() -> None:
    df = parse("FROM a\n\nRUN b \\\n  c\nCMD d\n", source="ctx/Dockerfile")
    assert [i.line for i in df.instructions] == [1, 3, 5]
    with pytest.raises(DockerfileError, match=r"ctx/Dockerfile:2: unknown instruction: FORM"):
        parse("FROM a\nFORM b\n", source="ctx/Dockerfile")
    assert issubclass(DockerfileError, ValueError)


def test_continuations_drop_comment_lines_and_skip_blank_ones() -> None:
    text = "RUN apt-get update && \\\n# a comment inside\n\n    apt-get install x \\   \n  && done\n"
    assert keywords(text) == [("RUN", "apt-get update &&     apt-get install x   && done")]


def test_the_escape_directive() -> None:
    text = "# escape=`\nFROM windows\nCOPY testfile.txt c:\\ `\n  d:\\\n"
    df = parse(text)
    assert df.escape == "`"
    assert [(i.keyword, i.args) for i in df.instructions][1] == ("COPY", "testfile.txt c:\\   d:\\")


def test_directives_only_at_the_top() -> None:
    # after a comment, a directive is a comment; an unknown directive ends them too
    assert parse("# about\n# escape=`\nFROM a\n").escape == "\\"
    assert parse("# unknowndirective=value\n# escape=`\nFROM a\n").escape == "\\"
    assert parse("#ESCAPE = `\nFROM a\n").escape == "`"
    with pytest.raises(DockerfileError, match="only one escape"):
        parse("# escape=`\n# escape=\\\nFROM a\n")
    with pytest.raises(DockerfileError, match="invalid escape"):
        parse("# escape=x\nFROM a\n")
    assert any("ignored" in n for n in parse("# syntax=docker/dockerfile:1\nFROM a\n").notes)


def test_heredocs() -> None:
    text = ("FROM a\nRUN <<EOF\necho one\necho two\nEOF\n"
            "COPY <<-\"A\" /x <<B /y\n\tkeep $HOME\n\tA\nb $HOME\nB\nCMD z\n")
    df = parse(text)
    run, copy = df.instructions[1], df.instructions[2]
    assert run.heredocs[0].name == "EOF" and run.heredocs[0].content == "echo one\necho two\n"
    assert [(h.name, h.content, h.expand, h.strip_tabs) for h in copy.heredocs] == [
        ("A", "keep $HOME\n", False, True), ("B", "b $HOME\n", True, False)]
    assert df.instructions[3].keyword == "CMD"
    with pytest.raises(DockerfileError, match="no closing EOF"):
        parse("RUN <<EOF\necho\n")


def test_flags_come_first() -> None:
    i = parse_line("COPY --from=build --chown=1:2 --link a b")
    assert i.flags == (("from", "build"), ("chown", "1:2"), ("link", None))
    assert i.args == "a b" and i.flag("link") == "" and i.flag("chmod") is None
    with pytest.raises(DockerfileError, match="unknown flag --chwon"):
        parse_line("COPY --chwon=1 a b").check_flags(["from", "chown"])


def test_exec_and_shell_forms() -> None:
    assert parse_line('CMD ["echo", "a b"]').exec_form() == ["echo", "a b"]
    assert parse_line("CMD [echo, a]").exec_form() is None  # not JSON: the shell form
    assert parse_line('CMD ["a", 1]').exec_form() is None
    assert parse_line("CMD echo $HOME").exec_form() is None


def test_name_value_pairs() -> None:
    assert name_values(parse_line('ENV a=b c="d e" f=g\\ h')) == [("a", "b"), ("c", '"d e"'), ("f", "g\\ h")]
    assert name_values(parse_line("ENV MY_NAME John Doe")) == [("MY_NAME", "John Doe")]
    with pytest.raises(DockerfileError, match="name=value"):
        name_values(parse_line("LABEL version"))


def test_split_words_keeps_quotes_for_expand() -> None:
    assert split_words('a "b c" d\\ e \'f g\'') == ['a', '"b c"', 'd\\ e', "'f g'"]
    with pytest.raises(DockerfileError, match="unterminated"):
        split_words('a "b')


# the reference's "Environment replacement" examples, and the shell lexer's quoting
@pytest.mark.parametrize("word,want", [
    ("${FOO}", "/bar"), ("$FOO", "/bar"), ("\\$FOO", "$FOO"), ("${FOO}/baz", "/bar/baz"),
    ("${UNSET:-word}", "word"), ("${FOO:-word}", "/bar"), ("${EMPTY:-word}", "word"),
    ("${EMPTY-word}", ""), ("${UNSET-word}", "word"),
    ("${FOO:+word}", "word"), ("${UNSET:+word}", ""), ("${EMPTY:+word}", ""), ("${EMPTY+word}", "word"),
    ("'$FOO'", "$FOO"), ('"$FOO and ${FOO}"', "/bar and /bar"), ('"a\\"b"', 'a"b'),
    ("abc$", "abc$"), ("$1x", "$1x"), ("${UNSET:-${FOO}/x}", "/bar/x"), ("a\\ b", "a b"),
])
def test_expand(word: str, want: str) -> None:
    assert expand(word, {"FOO": "/bar", "EMPTY": ""}) == want


def test_expand_errors_and_required_variables() -> None:
    with pytest.raises(DockerfileError, match="FOO: needed"):
        expand("${FOO:?needed}", {})
    with pytest.raises(DockerfileError, match="bad substitution"):
        expand("${}", {})
    with pytest.raises(DockerfileError, match="missing"):
        expand("${A:-x", {})
    seen: list = []
    expand("$A ${B}", {"B": "1"}, unset=seen.append)
    assert seen == ["A"]


# -- laws ------------------------------------------------------------------------------------

PLAIN = st.text(alphabet=st.characters(blacklist_characters="$'\"\\`", blacklist_categories=("Cs",)), max_size=30)
# a word inside ${...} ends at its first unescaped "}", as in the shell
WORD = st.text(alphabet=st.characters(blacklist_characters="$'\"\\`{}", blacklist_categories=("Cs",)), max_size=30)
NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)


@given(PLAIN)
def test_text_without_specials_expands_to_itself(word: str) -> None:
    assert expand(word, {"A": "x"}) == word


@given(NAME, st.dictionaries(NAME, PLAIN, max_size=4), WORD)
def test_default_and_alternative_values(name: str, env: dict, word: str) -> None:
    value = env.get(name, "")
    assert expand("${%s:-%s}" % (name, word), env) == (value if value else word)
    assert expand("${%s:+%s}" % (name, word), env) == (word if value else "")
    assert expand("'${%s}'" % name, env) == "${%s}" % name


@given(st.lists(st.text(alphabet="abc=-_./:", min_size=1, max_size=8), min_size=1, max_size=6))
def test_split_words_of_plain_words(words: list) -> None:
    assert split_words(" ".join(words)) == words


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_hostile_text_gives_a_dockerfile_error_or_instructions(text: str) -> None:
    try:
        df = parse(text)
    except DockerfileError:
        return
    for i in df.instructions:
        assert i.keyword.isupper()
        i.exec_form()
        try:
            for word in split_words(i.args, df.escape):
                expand(word, {"A": "1"}, df.escape)
        except DockerfileError:
            pass
