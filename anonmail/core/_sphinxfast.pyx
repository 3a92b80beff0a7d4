# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The symmetric half of one Sphinx hop in C on OpenSSL's libcrypto, the GIL released.

Why: in :func:`anonmail.core.sphinx.process` the AES, SHA-256 and HMAC work on a 4 kB packet
costs a few microseconds, but reaching it through ``cryptography``'s cipher objects (one new
context per key, type checks per call) and ``hashlib``/``hmac`` costs several times that, as much
as a third of the two X25519 multiplications. Here every step runs on stack buffers with the
ciphers fetched once. The functions compute exactly what the pure-Python path in ``sphinx.py``
computes (same bytes; ``tests/unit/core/test_sphinx_fast.py`` compares them), and that path runs
when this module could not be built.
"""

__all__ = ["header_keys", "unwrap"]

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy, memset

cdef extern from *:
    """
    #define OPENSSL_SUPPRESS_DEPRECATED 1
    #include <openssl/crypto.h>
    #include <openssl/evp.h>
    #include <openssl/sha.h>
    """
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct SHA256_CTX:
        pass
    EVP_CIPHER* EVP_CIPHER_fetch(void* libctx, const char* algorithm, const char* properties)
    EVP_CIPHER_CTX* EVP_CIPHER_CTX_new() nogil
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX* ctx) nogil
    int EVP_EncryptInit_ex2(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, const unsigned char* key,
                            const unsigned char* iv, const void* params) nogil
    int EVP_EncryptUpdate(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl, const unsigned char* inp,
                          int inl) nogil
    int SHA256_Init(SHA256_CTX* c) nogil
    int SHA256_Update(SHA256_CTX* c, const void* data, size_t n) nogil
    int SHA256_Final(unsigned char* md, SHA256_CTX* c) nogil
    int CRYPTO_memcmp(const void* a, const void* b, size_t n) nogil

cdef enum:
    K = 16
    BETA = 208
    BETA_PAD = 2 * (32 + 208)  # sphinx._BETA_PAD: 2 * SPHINX_MAX_LEN zero bytes
    BODY = 3840

cdef const EVP_CIPHER* _CTR = EVP_CIPHER_fetch(NULL, b"AES-128-CTR", NULL)
cdef const EVP_CIPHER* _ECB = EVP_CIPHER_fetch(NULL, b"AES-128-ECB", NULL)
if _CTR == NULL or _ECB == NULL:
    raise ImportError("libcrypto has no AES-128-CTR/ECB")

cdef const char* _FLAVOURS = (b"hbhbhbhbhbhbhbhb" b"hrhohrhohrhohrho" b"hmu:hmu:hmu:hmu:"
                              b"htauhtauhtauhtau" b"hpi:hpi:hpi:hpi:")
cdef const char* _AES_KEY_LABEL = b"aes_key:"
cdef unsigned char _ZEROS[BETA + BETA_PAD]
memset(_ZEROS, 0, BETA + BETA_PAD)


cdef int _aes(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, const unsigned char* key, const unsigned char* iv,
              const unsigned char* inp, unsigned char* out, int n) noexcept nogil:
    cdef int outl = 0
    if EVP_EncryptInit_ex2(ctx, cipher, key, iv, NULL) != 1:
        return -1
    if EVP_EncryptUpdate(ctx, out, &outl, inp, n) != 1 or outl != n:
        return -1
    return 0


cdef void _sha256_tail(const unsigned char* data, size_t n, const unsigned char* key, unsigned char label,
                       unsigned char* out) noexcept nogil:
    """sha256(data + key + label), as sphinx._sha256_tail (the caller keeps the first K bytes)."""
    cdef SHA256_CTX c
    SHA256_Init(&c)
    SHA256_Update(&c, data, n)
    SHA256_Update(&c, key, K)
    SHA256_Update(&c, &label, 1)
    SHA256_Final(out, &c)


cdef void _hmac16(const unsigned char* key, const unsigned char* data, size_t n, unsigned char* out) noexcept nogil:
    """HMAC-SHA256 with a 16-byte key, as hmac.digest(key, data, "sha256")."""
    cdef unsigned char pad[64]
    cdef unsigned char inner[32]
    cdef SHA256_CTX c
    cdef int i
    memset(pad, 0x36, 64)
    for i in range(K):
        pad[i] = key[i] ^ 0x36
    SHA256_Init(&c)
    SHA256_Update(&c, pad, 64)
    SHA256_Update(&c, data, n)
    SHA256_Final(inner, &c)
    memset(pad, 0x5C, 64)
    for i in range(K):
        pad[i] = key[i] ^ 0x5C
    SHA256_Init(&c)
    SHA256_Update(&c, pad, 64)
    SHA256_Update(&c, inner, 32)
    SHA256_Final(out, &c)


cdef int _lioness_dec(EVP_CIPHER_CTX* ctx, const unsigned char* key, const unsigned char* m,
                      unsigned char* out) noexcept nogil:
    """sphinx._lioness_dec of a BODY-byte block into ``out``."""
    cdef unsigned char left[K]
    cdef unsigned char k[32]
    cdef unsigned char* right = out + K
    if _aes(ctx, _CTR, key, m, m + K, right, BODY - K):  # right = CTR(iv=left)(m[K:])
        return -1
    _sha256_tail(right, BODY - K, key, 0x33, k)  # b"3"
    if _aes(ctx, _CTR, key, k, m, left, K):  # left = CTR(iv=k3)(left)
        return -1
    if _aes(ctx, _CTR, key, left, right, right, BODY - K):  # right = CTR(iv=left)(right)
        return -1
    _sha256_tail(right, BODY - K, key, 0x31, k)  # b"1"
    return _aes(ctx, _CTR, key, k, left, out, K)  # left = CTR(iv=k1)(left)


cdef void _need(bytes value, Py_ssize_t size, str name) except *:
    if PyBytes_GET_SIZE(value) != size:
        raise ValueError(f"{name} must be {size} bytes, got {PyBytes_GET_SIZE(value)}")


def header_keys(bytes s, bytes beta, bytes gamma):
    """The hop's keys (hb, hrho, htau, hpi) from shared secret ``s``, or None if ``gamma`` is not beta's MAC."""
    _need(s, 32, "shared secret")
    _need(beta, BETA, "beta")
    _need(gamma, K, "gamma")
    cdef const unsigned char* sp = <const unsigned char*>PyBytes_AS_STRING(s)
    cdef const unsigned char* bp = <const unsigned char*>PyBytes_AS_STRING(beta)
    cdef const unsigned char* gp = <const unsigned char*>PyBytes_AS_STRING(gamma)
    cdef unsigned char digest[32]
    cdef unsigned char m[80]
    cdef unsigned char mac[32]
    cdef SHA256_CTX c
    cdef int rc = 0, same = 0
    cdef EVP_CIPHER_CTX* ctx
    with nogil:
        SHA256_Init(&c)
        SHA256_Update(&c, _AES_KEY_LABEL, 8)
        SHA256_Update(&c, sp, 32)
        SHA256_Final(digest, &c)  # sphinx._aes_key: its first K bytes
        ctx = EVP_CIPHER_CTX_new()
        if ctx == NULL:
            rc = -1
        else:
            rc = _aes(ctx, _ECB, digest, NULL, <const unsigned char*>_FLAVOURS, m, 80)  # sphinx._hop_keys
            EVP_CIPHER_CTX_free(ctx)
        if rc == 0:
            _hmac16(m + 32, bp, BETA, mac)  # sphinx._mu(hmu, beta)
            same = CRYPTO_memcmp(mac, gp, K) == 0
    if rc:
        raise MemoryError("libcrypto: AES-128-ECB failed")
    if not same:
        return None
    return (PyBytes_FromStringAndSize(<char*>m, K), PyBytes_FromStringAndSize(<char*>m + 16, K),
            PyBytes_FromStringAndSize(<char*>m + 48, K), PyBytes_FromStringAndSize(<char*>m + 64, K))


def unwrap(bytes hrho, bytes beta, bytes hpi, bytes delta):
    """(beta and its zero padding decrypted with ``hrho``, ``delta`` with one LIONESS layer removed by ``hpi``)."""
    _need(hrho, K, "hrho")
    _need(beta, BETA, "beta")
    _need(hpi, K, "hpi")
    _need(delta, BODY, "delta")
    cdef bytes b = PyBytes_FromStringAndSize(NULL, BETA + BETA_PAD)
    cdef bytes body = PyBytes_FromStringAndSize(NULL, BODY)
    cdef unsigned char* bo = <unsigned char*>PyBytes_AS_STRING(b)
    cdef unsigned char* out = <unsigned char*>PyBytes_AS_STRING(body)
    cdef const unsigned char* rp = <const unsigned char*>PyBytes_AS_STRING(hrho)
    cdef const unsigned char* bp = <const unsigned char*>PyBytes_AS_STRING(beta)
    cdef const unsigned char* pp = <const unsigned char*>PyBytes_AS_STRING(hpi)
    cdef const unsigned char* dp = <const unsigned char*>PyBytes_AS_STRING(delta)
    cdef int rc = -1
    cdef EVP_CIPHER_CTX* ctx
    with nogil:
        ctx = EVP_CIPHER_CTX_new()
        if ctx != NULL:
            memcpy(bo, bp, BETA)
            memset(bo + BETA, 0, BETA_PAD)
            rc = _aes(ctx, _CTR, rp, _ZEROS, bo, bo, BETA + BETA_PAD)  # sphinx._aes_ctr(hrho, beta + pad)
            if rc == 0:
                rc = _lioness_dec(ctx, pp, dp, out)
            EVP_CIPHER_CTX_free(ctx)
    if rc:
        raise MemoryError("libcrypto: AES-128-CTR failed")
    return b, body
