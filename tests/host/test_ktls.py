"""l7ctl/ktls.py: key derivation and the kernel's crypto_info layout."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from l7ctl import ktls

# RFC 8448 section 3 (simple 1-RTT handshake): the server's handshake
# traffic secret and the write key and IV derived from it.
RFC8448_SERVER_HS_SECRET = bytes.fromhex(
    "b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38"
)
RFC8448_KEY = bytes.fromhex("3fce516009c21727d0f2e4e86ee403bc")
RFC8448_IV = bytes.fromhex("5d313eb2671276ee13000b30")


def test_hkdf_expand_label_matches_rfc8448() -> None:
    s = RFC8448_SERVER_HS_SECRET
    assert ktls.hkdf_expand_label(s, "key", b"", 16, "sha256") == RFC8448_KEY
    assert ktls.hkdf_expand_label(s, "iv", b"", 12, "sha256") == RFC8448_IV


def test_crypto_info_is_the_kernels_aes_gcm_128_layout() -> None:
    cipher = ktls.TLS13_CIPHERS["TLS_AES_128_GCM_SHA256"]
    blob = ktls.tls13_crypto_info(cipher, RFC8448_SERVER_HS_SECRET, seq=7)
    # struct tls12_crypto_info_aes_gcm_128: info, iv[8], key[16], salt[4], rec_seq[8]
    assert len(blob) == 4 + 8 + 16 + 4 + 8
    version, kind = struct.unpack("=HH", blob[:4])
    assert (version, kind) == (ktls.TLS_1_3_VERSION, 51)
    assert blob[4:12] == RFC8448_IV[4:]
    assert blob[12:28] == RFC8448_KEY
    assert blob[28:32] == RFC8448_IV[:4]
    assert struct.unpack("!Q", blob[32:]) == (7,)


def test_crypto_info_chacha_has_no_salt_and_a_12_byte_iv() -> None:
    cipher = ktls.TLS13_CIPHERS["TLS_CHACHA20_POLY1305_SHA256"]
    blob = ktls.tls13_crypto_info(cipher, RFC8448_SERVER_HS_SECRET)
    assert len(blob) == 4 + 12 + 32 + 0 + 8
    assert blob[4:16] == RFC8448_IV


def test_crypto_info_refuses_a_secret_of_another_hash() -> None:
    with pytest.raises(ValueError, match="length"):
        ktls.tls13_crypto_info(
            ktls.TLS13_CIPHERS["TLS_AES_256_GCM_SHA384"], RFC8448_SERVER_HS_SECRET
        )


def test_read_keylog_picks_one_label_by_client_random(tmp_path: Path) -> None:
    log = tmp_path / "keys"
    log.write_text(
        "# comment\n"
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET 00aa 0102\n"
        "CLIENT_TRAFFIC_SECRET_0 00aa 0304\n"
        "CLIENT_TRAFFIC_SECRET_0 00bb 0506\n"
    )
    got = ktls.read_keylog(log, "CLIENT_TRAFFIC_SECRET_0")
    assert got == {b"\x00\xaa": b"\x03\x04", b"\x00\xbb": b"\x05\x06"}
