"""Digest authentication: RFC vectors, client → server round trips, failure verdicts, fuzzing."""

from __future__ import annotations

import base64
import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from byeline.sip.digest import (
    DigestChallenge,
    DigestChallenger,
    DigestCredentials,
    Verdict,
    answer_challenge,
    digest_response,
    parse_auth_header,
    select_challenge,
)

SECRET = b"0123456789abcdef-test-secret"
REALM = "byeline.example"
URI = "sip:agent@byeline.example"
T0 = 1_700_000_000.0


def make_challenger(nonce_ttl: float = 300, max_nonces: int = 4096) -> DigestChallenger:
    """A challenger with deterministic nonce randomness."""
    counter = itertools.count()

    def random(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    return DigestChallenger(REALM, SECRET, nonce_ttl, max_nonces=max_nonces, random=random)


# -- known-answer vectors --------------------------------------------------------------------


def test_rfc2617_section_3_5_md5_vector() -> None:
    assert (
        digest_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


RFC7616_CHALLENGE_SHA256 = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256,\r\n'
    '    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n'
    '    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def test_rfc7616_section_3_9_1_sha256_vector_via_client() -> None:
    value = answer_challenge(
        RFC7616_CHALLENGE_SHA256,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        cnonce=RFC7616_CNONCE,
    )
    creds = DigestCredentials.parse(value)
    assert creds.response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert creds.algorithm == "SHA-256"
    assert creds.qop == "auth"
    assert creds.nc == "00000001"
    assert creds.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def test_rfc7616_section_3_9_1_md5_vector() -> None:
    challenge = RFC7616_CHALLENGE_SHA256.replace("algorithm=SHA-256", "algorithm=MD5")
    value = answer_challenge(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life", cnonce=RFC7616_CNONCE
    )
    assert DigestCredentials.parse(value).response == "8ca523f5e9506fed4657c9700eebdbec"


def test_rfc2069_response_without_qop() -> None:
    value = answer_challenge(
        'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"',
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle Of Life",
    )
    creds = DigestCredentials.parse(value)
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    assert "algorithm" not in value  # not echoed when the challenge had none
    assert creds.response == digest_response(
        algorithm="MD5",
        username="Mufasa",
        realm="testrealm@host.com",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
    )


# -- parsing ---------------------------------------------------------------------------------


def test_parse_quoted_commas_escapes_case_and_lws() -> None:
    scheme, params = parse_auth_header(
        'digest  REALM = "a, \\"quoted\\" realm" ,NONCE="x,y",\r\n\tqop="auth,auth-int" ,,'
        " algorithm=md5-SESS, opaque=abc/def=="
    )
    assert scheme == "digest"
    assert params == {
        "realm": 'a, "quoted" realm',
        "nonce": "x,y",
        "qop": "auth,auth-int",
        "algorithm": "md5-SESS",
        "opaque": "abc/def==",
    }
    challenge = DigestChallenge.parse(
        'digest  REALM = "r" ,NONCE="x,y", qop="auth,auth-int", algorithm=md5-SESS'
    )
    assert challenge.algorithm == "MD5-sess"
    assert challenge.qop == ("auth", "auth-int")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        'Digest realm="unterminated',
        'Digest realm="a" nonce="b"',
        'Digest realm="a", realm="b"',
        "Digest realm",
        "Digest =x",
        'Digest realm="a\x00"',
        'Digest realm="a\\',
        ', realm="a"',
        'Digest, realm="a"',
    ],
)
def test_parse_rejects_malformed(value: str) -> None:
    with pytest.raises(ValueError):
        parse_auth_header(value)


def test_challenge_round_trip() -> None:
    challenge = DigestChallenge(
        realm='we "quote"', nonce="n", algorithm="SHA-256", qop=("auth",), opaque="o", stale=True
    )
    assert DigestChallenge.parse(challenge.serialize()) == challenge


def test_credentials_reject_inconsistent_qop() -> None:
    base = 'Digest username="u", realm="r", nonce="n", uri="sip:x", response="0"'
    with pytest.raises(ValueError, match="cnonce and nc"):
        DigestCredentials.parse(base + ", qop=auth")
    with pytest.raises(ValueError, match="8 hexadecimal"):
        DigestCredentials.parse(base + ', qop=auth, nc=1, cnonce="c"')
    with pytest.raises(ValueError, match="unsupported digest algorithm"):
        DigestCredentials.parse(base + ", algorithm=SHA-512-256")
    with pytest.raises(ValueError, match="not Digest"):
        DigestCredentials.parse('Basic realm="r"')
    with pytest.raises(ValueError, match="username\\*"):
        DigestCredentials.parse(base + ", username*=UTF-8''J%C3%A4s%C3%B8n")
    with pytest.raises(ValueError, match="needs a cnonce"):
        DigestCredentials.parse(base + ", algorithm=MD5-sess")
    with pytest.raises(ValueError, match="nc must be between"):
        answer_challenge('Digest realm="r", nonce="n", qop="auth"', "INVITE", URI, "u", "p", nc=0)


def test_select_challenge_prefers_sha256() -> None:
    challenger = make_challenger()
    values = list(reversed(challenger.challenge(T0)))
    values.append('Digest realm="x", nonce="y", algorithm=SHA-512')
    assert select_challenge(values).algorithm == "SHA-256"
    with pytest.raises(ValueError):
        select_challenge(['Basic realm="x"'])


def test_client_refuses_auth_int_only() -> None:
    with pytest.raises(ValueError, match="not auth"):
        answer_challenge('Digest realm="r", nonce="n", qop="auth-int"', "INVITE", URI, "u", "p")


# -- server ----------------------------------------------------------------------------------


def test_challenge_lists_sha256_first_with_qop_auth() -> None:
    values = make_challenger().challenge(T0)
    assert len(values) == 2
    first, second = (DigestChallenge.parse(v) for v in values)
    assert (first.algorithm, second.algorithm) == ("SHA-256", "MD5")
    assert first.nonce == second.nonce
    assert first.qop == ("auth",) and first.realm == REALM and not first.stale
    assert DigestChallenge.parse(make_challenger().challenge(T0, stale=True)[0]).stale


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
def test_round_trip_client_to_server(algorithm: str) -> None:
    challenger = make_challenger()
    (value,) = challenger.challenge(T0, algorithms=(algorithm,))
    for nc in (1, 2, 5):
        auth = answer_challenge(value, "INVITE", URI, "five9", "s3cret", nc=nc)
        verdict = challenger.verify("INVITE", auth, "five9", "s3cret", T0 + 10)
        assert verdict.verdict is Verdict.OK, verdict.reason
        assert verdict.ok


def test_round_trip_without_qop_legacy() -> None:
    challenger = make_challenger()
    nonce = DigestChallenge.parse(challenger.challenge(T0)[1]).nonce
    auth = answer_challenge(f'Digest realm="{REALM}", nonce="{nonce}"', "REGISTER", URI, "u", "p")
    assert challenger.verify("REGISTER", auth, "u", "p", T0 + 1).verdict is Verdict.OK


def test_stale_nonce() -> None:
    challenger = make_challenger(nonce_ttl=300)
    value = challenger.challenge(T0)[0]
    auth = answer_challenge(value, "INVITE", URI, "u", "p")
    assert challenger.verify("INVITE", auth, "u", "p", T0 + 300).verdict is Verdict.OK
    auth2 = answer_challenge(value, "INVITE", URI, "u", "p", nc=2)
    stale = challenger.verify("INVITE", auth2, "u", "p", T0 + 301)
    assert stale.verdict is Verdict.STALE
    # A wrong password on an expired nonce is BAD, not STALE (RFC 2617 §3.2.1).
    wrong = answer_challenge(value, "INVITE", URI, "u", "nope", nc=3)
    assert challenger.verify("INVITE", wrong, "u", "p", T0 + 301).verdict is Verdict.BAD


def test_forged_nonce() -> None:
    challenger = make_challenger()
    other = DigestChallenger(REALM, b"another-secret-of-16+bytes")
    auth = answer_challenge(other.challenge(T0)[0], "INVITE", URI, "u", "p")
    result = challenger.verify("INVITE", auth, "u", "p", T0)
    assert result.verdict is Verdict.BAD and "not issued by us" in result.reason
    # Tampering with the timestamp of a genuine nonce breaks the MAC.
    nonce = DigestChallenge.parse(challenger.challenge(T0)[0]).nonce
    raw = bytearray(base64.urlsafe_b64decode(nonce))
    raw[7] ^= 1
    forged = base64.urlsafe_b64encode(bytes(raw)).decode()
    auth = answer_challenge(
        f'Digest realm="{REALM}", nonce="{forged}", qop="auth"', "INVITE", URI, "u", "p"
    )
    assert challenger.verify("INVITE", auth, "u", "p", T0).verdict is Verdict.BAD
    # RFC 7616 vector nonce: not ours either.
    auth = answer_challenge(RFC7616_CHALLENGE_SHA256, "INVITE", URI, "u", "p")
    assert challenger.verify("INVITE", auth, "u", "p", T0).verdict is Verdict.BAD


def test_respelled_nonce_is_not_a_fresh_table_key() -> None:
    challenger = make_challenger()
    nonce = DigestChallenge.parse(challenger.challenge(T0)[0]).nonce
    auth = answer_challenge(
        f'Digest realm="{REALM}", nonce="{nonce}", qop="auth"', "INVITE", URI, "u", "p"
    )
    assert challenger.verify("INVITE", auth, "u", "p", T0).ok
    respelled = nonce + "!!"  # b64decode would skip these characters
    auth = answer_challenge(
        f'Digest realm="{REALM}", nonce="{respelled}", qop="auth"', "INVITE", URI, "u", "p"
    )
    assert challenger.verify("INVITE", auth, "u", "p", T0).verdict is Verdict.BAD


def test_replayed_nonce_count() -> None:
    challenger = make_challenger()
    value = challenger.challenge(T0)[0]
    auth = answer_challenge(value, "INVITE", URI, "u", "p", cnonce="c1", nc=1)
    assert challenger.verify("INVITE", auth, "u", "p", T0).ok
    replay = challenger.verify("INVITE", auth, "u", "p", T0 + 1)
    assert replay.verdict is Verdict.BAD and "replayed" in replay.reason
    lower = answer_challenge(value, "INVITE", URI, "u", "p", nc=3)
    assert challenger.verify("INVITE", lower, "u", "p", T0).ok
    again = answer_challenge(value, "INVITE", URI, "u", "p", nc=2)
    assert challenger.verify("INVITE", again, "u", "p", T0).verdict is Verdict.BAD


def test_evicted_nonce_state_does_not_reopen_replay() -> None:
    challenger = make_challenger(max_nonces=2)
    values = [challenger.challenge(T0 + i)[0] for i in range(3)]
    first = answer_challenge(values[0], "INVITE", URI, "u", "p", nc=1)
    assert challenger.verify("INVITE", first, "u", "p", T0 + 5).ok
    for value in values[1:]:
        auth = answer_challenge(value, "INVITE", URI, "u", "p", nc=1)
        assert challenger.verify("INVITE", auth, "u", "p", T0 + 5).ok
    # The first nonce's entry was evicted: its replay must not pass.
    assert challenger.verify("INVITE", first, "u", "p", T0 + 6).verdict is Verdict.STALE


@pytest.mark.parametrize(
    ("method", "username", "password", "reason"),
    [
        ("INVITE", "u", "wrong", "wrong response"),
        ("BYE", "u", "p", "wrong response"),
        ("INVITE", "someone-else", "p", "does not match account"),
    ],
)
def test_bad_credentials(method: str, username: str, password: str, reason: str) -> None:
    challenger = make_challenger()
    auth = answer_challenge(challenger.challenge(T0)[0], "INVITE", URI, "u", "p")
    result = challenger.verify(method, auth, username, password, T0)
    assert result.verdict is Verdict.BAD
    assert reason in result.reason


def test_request_uri_check() -> None:
    challenger = make_challenger()
    auth = answer_challenge(challenger.challenge(T0)[0], "INVITE", URI, "u", "p")
    other = challenger.verify("INVITE", auth, "u", "p", T0, request_uri="sip:other@x")
    assert other.verdict is Verdict.BAD and "Request-URI" in other.reason
    assert challenger.verify("INVITE", auth, "u", "p", T0, request_uri=URI).ok


def test_wrong_realm() -> None:
    challenger = make_challenger()
    nonce = DigestChallenge.parse(challenger.challenge(T0)[0]).nonce
    auth = answer_challenge(
        f'Digest realm="elsewhere", nonce="{nonce}", qop="auth"', "INVITE", URI, "u", "p"
    )
    result = challenger.verify("INVITE", auth, "u", "p", T0)
    assert result.verdict is Verdict.BAD and "realm" in result.reason


def test_unknown_algorithm_and_malformed_are_bad() -> None:
    challenger = make_challenger()
    nonce = DigestChallenge.parse(challenger.challenge(T0)[0]).nonce
    unknown = (
        f'Digest username="u", realm="{REALM}", nonce="{nonce}", uri="{URI}", '
        'response="00", algorithm=SHA-512-256'
    )
    assert challenger.verify("INVITE", unknown, "u", "p", T0).verdict is Verdict.BAD
    assert challenger.verify("INVITE", "Digest garbage", "u", "p", T0).verdict is Verdict.BAD
    auth_int = (
        f'Digest username="u", realm="{REALM}", nonce="{nonce}", uri="{URI}", '
        'response="00", qop=auth-int, nc=00000001, cnonce="c"'
    )
    result = challenger.verify("INVITE", auth_int, "u", "p", T0)
    assert result.verdict is Verdict.BAD and "qop" in result.reason


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        DigestChallenger(REALM, b"short")
    with pytest.raises(ValueError):
        DigestChallenger("bad\r\nrealm", SECRET)


# -- fuzzing ---------------------------------------------------------------------------------

_SAMPLE = answer_challenge(RFC7616_CHALLENGE_SHA256, "INVITE", URI, "u", "p", cnonce="abc")


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from([_SAMPLE, RFC7616_CHALLENGE_SHA256]))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from(list('",=\\ \t\r\n\x00aZ9é')) | st.characters())
        if op == "insert":
            text = text[:pos] + char + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + 1 :]
        else:
            text = text[:pos] + char + text[pos + 1 :]
    return text


@given(st.one_of(st.text(), mutated()))
def test_parsers_raise_only_value_error(value: str) -> None:
    for parse in (parse_auth_header, DigestChallenge.parse, DigestCredentials.parse):
        with contextlib.suppress(ValueError):
            parse(value)


@given(st.one_of(st.text(), mutated()))
def test_verify_never_raises(value: str) -> None:
    challenger = make_challenger()
    result = challenger.verify("INVITE", value, "u", "p", T0)
    assert result.verdict in (Verdict.OK, Verdict.STALE, Verdict.BAD)
