"""acgs_verify.redact: the one place an exception becomes the one line a failure message quotes."""

from __future__ import annotations

import pytest

from acgs_verify.redact import ONE_LINE_MAX, display_url, last_line, mask, one_line


def test_multi_line_exception_becomes_one_line():
    exc = OSError('connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
                  "\tIs the server running on that host and accepting TCP/IP connections?\n")
    assert one_line(exc) == ('connection to server at "127.0.0.1", port 1 failed: Connection refused '
                             "Is the server running on that host and accepting TCP/IP connections?")


def test_long_message_is_cut_at_the_one_limit():
    text = one_line(ValueError("x" * 5000 + "\n" + "y" * 10))
    assert text == "x" * ONE_LINE_MAX
    assert one_line("a\n" * 5000).count("\n") == 0


@pytest.mark.parametrize("exc", [TimeoutError(), ValueError(""), OSError(" \n\t ")])
def test_empty_message_names_the_exception_type(exc):
    assert one_line(exc) == type(exc).__name__


def test_empty_message_falls_back_to_its_cause():
    try:
        try:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        except OSError as inner:
            raise RuntimeError() from inner
    except RuntimeError as exc:
        assert one_line(exc) == "[Errno 111] Connection refused"


def test_secret_in_the_message_is_masked():
    exc = RuntimeError("password authentication failed for acgs with s3cr3t-pw\n(s3cr3t-pw rejected)")
    assert one_line(exc, ["s3cr3t-pw"]) == "password authentication failed for acgs with *** (*** rejected)"


def test_secret_cut_at_the_limit_shows_none_of_it():
    secret = "topsecretvalue"
    # cut first, the line would end in "topse"; masked first, it ends in "***"
    assert one_line(ValueError("x" * (ONE_LINE_MAX - 5) + secret), [secret]) == "x" * (ONE_LINE_MAX - 5) + "***"


def test_a_text_is_flattened_like_an_exception():
    assert one_line("ssh: connect to host 10.0.0.5 port 22:\n  Connection timed out\n") == (
        "ssh: connect to host 10.0.0.5 port 22: Connection timed out")


def test_a_commands_last_line_is_its_error_as_one_line():
    stderr = "WARNING: errors ignored on restore: 1\n\npg_restore: error: could not read  input file: s3cr3t-pw\n  \n"
    assert last_line(stderr, ["s3cr3t-pw"]) == "pg_restore: error: could not read input file: ***"
    assert last_line(" \n", default="(no message)") == "(no message)"
    assert last_line(None) == ""
    assert last_line("x" * 5000) == "x" * ONE_LINE_MAX


def test_a_longer_limit_is_asked_for_by_name():
    assert one_line("y" * 5000, limit=500) == "y" * 500
    assert last_line("a\n" + "z" * 5000, limit=500) == "z" * 500


def test_url_with_a_password_is_displayed_without_it():
    assert display_url("postgresql://acgs:hunter22@db-1:5432/acgs_production") == (
        "postgresql://acgs:***@db-1:5432/acgs_production")
    assert display_url("redis://:hunter22@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert display_url("postgresql://acgs@db-1/acgs") == "postgresql://acgs@db-1/acgs"
    assert "hunter22" not in display_url("postgresql://acgs:hunter22@[::1/acgs")


def test_mask_replaces_longest_secret_first_and_ignores_short_ones():
    assert mask("abcdef abc", ["abc", "abcdef"]) == "*** ***"
    assert mask("ab is too short to mask", ["ab", ""]) == "ab is too short to mask"


def test_a_check_message_is_masked_before_it_is_cut():
    """A secret that straddles the length a result keeps must not leave its first half behind."""
    from types import SimpleNamespace as NS

    from acgs_verify.collector import MESSAGE_MAX, _message

    secret = "s3cret-" + "k" * 20
    text = "y" * (MESSAGE_MAX - 10) + secret + " and more"
    message = _message(NS(longrepr=NS(reprcrash=NS(message=text)), outcome="failed"), [secret])
    assert "s3cret" not in message and len(message) <= MESSAGE_MAX, message[-40:]


# ------------------------------------------------------------------------------ control characters (issue 21)


def test_printable_shows_c0_del_c1_and_bidi_controls_as_escapes():
    from acgs_verify.redact import printable

    text = "t\x1b]0;title\x07 \x1b[2J \x1b]52;c;eA==\x07 \r \x00 \x7f \x9b2J \x85 \u202eevil\u2069 \u2028 \udcff"
    assert printable(text) == ("t\\x1b]0;title\\x07 \\x1b[2J \\x1b]52;c;eA==\\x07 \\r \\x00 \\x7f \\x9b2J \\x85 "
                               "\\u202eevil\\u2069 \\u2028 \\udcff")
    assert printable("a\tb\nc") == "a\\tb\\nc"  # one line: a table cell, a label, a terminal line
    assert printable("a\tb\nc\rd", multiline=True) == "a\tb\nc\\rd"  # a fence or a <pre>: lines and tabs kept
    assert printable("ünïcode, a regex \\d+ and C:\\path") == "ünïcode, a regex \\d+ and C:\\path"


def test_printable_twice_is_printable_once():
    from acgs_verify.redact import printable

    text = "\x1b[2J\x9b\u202e\t\n"
    assert printable(printable(text)) == printable(text)
    assert printable(printable(text, multiline=True), multiline=True) == printable(text, multiline=True)


def test_one_line_and_last_line_escape_what_a_target_said():
    assert one_line(OSError("bad line: \x1b]0;owned\x07\x1b[2J\x9b")) == "bad line: \\x1b]0;owned\\x07\\x1b[2J\\x9b"
    assert last_line("ok\nerror: \x1b]52;c;eA==\x07\n") == "error: \\x1b]52;c;eA==\\x07"


def test_a_cut_never_leaves_half_an_escape():
    text = one_line("x" * (ONE_LINE_MAX - 2) + "\x1b[2J")  # the limit falls inside `\x1b`
    assert text == "x" * (ONE_LINE_MAX - 2), text[-10:]


@pytest.mark.parametrize("secret", ["Hunter  two", "Hunter\ttwo", "Hunter\ntwo", "Hunter \r\n two"])
def test_a_secret_with_whitespace_inside_is_masked_before_it_is_normalised(secret):
    """Normalised first, `Hunter  two` became `Hunter two`, which masking no longer recognised."""
    for text in (f"login with {secret} failed", RuntimeError(f"login with {secret}\nfailed")):
        assert one_line(text, [secret]) == "login with *** failed"
    # a text normalised by someone else (a probe's one_line without the secrets) is masked all the same
    assert mask(one_line(f"login with {secret} failed"), [secret]) == "login with *** failed"
    assert last_line(f"warning\nlogin with {secret} failed\n", [secret]) == "login with *** failed"


def test_a_secret_is_masked_in_its_escaped_form():
    from acgs_verify.redact import printable

    secret = "Tab\tsecret\x1b"
    assert mask(printable(f"pw {secret}"), [secret]) == "pw ***"
    assert mask(printable(f"pw {secret}", multiline=True), [secret]) == "pw ***"


def test_a_message_cut_to_the_length_a_result_keeps_never_leaves_half_an_escape():
    from acgs_verify.results import shortened

    message = "SVC-02 auth: " + "x" * 200 + "\\x1b[2J" + "y" * 50 + ". Next: restart it"
    assert shortened(message, 235) == "SVC-02 auth: " + "x" * 200 + "... Next: restart it"
    assert shortened("a" * 10 + "\\x1b" + "b" * 10, 15) == "a" * 10 + "..."
