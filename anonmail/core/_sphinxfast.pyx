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

__all__ = ["header_keys", "unwrap", "open_headers", "unwrap_hops", "bloom_add", "BLINDING_VERSION"]

#: The blinding definition computed here (sphinx.BLINDING_VERSION; sphinx.py refuses another).
BLINDING_VERSION = 2

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
cdef const char* _BLINDING_LABEL = b"anonmail-sphinx-blinding-v2"  # sphinx.BLINDING_LABEL
cdef size_t _BLINDING_LABEL_LEN = 27
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


# --------------------------------------------------------------------------- whole hops, in batches
#
# Why: a mix spends most of its time in the two X25519 multiplications of each hop. Called
# through PyNaCl they release the GIL, but every call, every slice and every key object around
# them holds it, and a mix's other work (reading, writing, the replay filter) needs it too: with
# that work per packet the GIL, not the two cores, bounds the throughput. Here a whole batch of
# hops runs with the GIL released once, on libsodium's own crypto_scalarmult (the function PyNaCl
# calls, taken from its cffi module; without it these functions are absent and sphinx.py calls
# PyNaCl per hop as before).

from libc.stdlib cimport free, malloc

ctypedef int (*scalarmult_t)(unsigned char* q, const unsigned char* n, const unsigned char* p) noexcept nogil

cdef enum:
    ALPHA = 32
    GAMMA_AT = 32 + BETA
    HEADER = 32 + BETA + K
    PACKET = HEADER + BODY
    KEYS = 4 * K  # hb | hrho | htau | hpi
    B = BETA + BETA_PAD

cdef enum:  # status codes of open_headers and unwrap_hops
    C_BAD_SIZE = 1
    C_NOT_CANONICAL = 2
    C_LOW_ORDER = 3
    C_BAD_MAC = 4

#: Status codes of :func:`open_headers` and :func:`unwrap_hops` (anything else in a result is the hop's).
BAD_SIZE, NOT_CANONICAL, LOW_ORDER, BAD_MAC = C_BAD_SIZE, C_NOT_CANONICAL, C_LOW_ORDER, C_BAD_MAC

cdef scalarmult_t _scalarmult = NULL


def _bind_scalarmult():
    global _scalarmult
    try:
        import nacl.bindings  # noqa: F401 - runs sodium_init, which picks the fastest X25519 code
        from nacl._sodium import ffi, lib
        address = int(ffi.cast("uintptr_t", ffi.addressof(lib, "crypto_scalarmult")))
    except (ImportError, AttributeError, TypeError):
        return False
    _scalarmult = <scalarmult_t><size_t>address
    return True


cdef bint _canonical(const unsigned char* a) noexcept nogil:
    """Whether the little-endian ``a`` is below 2**255 - 19 (as sphinx._unwrap's check)."""
    cdef int i
    if a[31] != 0x7F:
        return a[31] < 0x7F
    for i in range(30, 0, -1):
        if a[i] != 0xFF:
            return 1
    return a[0] < 0xED


cdef int _open_header(EVP_CIPHER_CTX* ctx, const unsigned char* secret, const unsigned char* pkt,
                      unsigned char* out) noexcept nogil:
    cdef unsigned char s[32]
    cdef unsigned char digest[32]
    cdef unsigned char m[80]
    cdef unsigned char mac[32]
    cdef SHA256_CTX c
    if pkt == NULL:
        return C_BAD_SIZE
    if not _canonical(pkt):
        return C_NOT_CANONICAL
    if _scalarmult(s, secret, pkt) != 0:
        return C_LOW_ORDER
    SHA256_Init(&c)
    SHA256_Update(&c, _AES_KEY_LABEL, 8)
    SHA256_Update(&c, s, 32)
    SHA256_Final(digest, &c)
    if _aes(ctx, _ECB, digest, NULL, <const unsigned char*>_FLAVOURS, m, 80):
        return -1
    _hmac16(m + 32, pkt + ALPHA, BETA, mac)
    if CRYPTO_memcmp(mac, pkt + GAMMA_AT, K) != 0:
        return C_BAD_MAC
    memcpy(out, m, K)  # hb
    memcpy(out + K, m + 16, K)  # hrho
    memcpy(out + 2 * K, m + 48, K)  # htau
    memcpy(out + 3 * K, m + 64, K)  # hpi
    return 0


cdef int _each(int unwrap, Py_ssize_t n, const unsigned char* secret, const unsigned char** ptrs, unsigned char* keys,
               unsigned char* bs, unsigned char** outs, int* status) noexcept nogil:
    """Open every header (``unwrap`` 0) or unwrap every hop (1) on one cipher context; -1 if libcrypto failed."""
    cdef EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new()
    cdef int failed = 0
    cdef Py_ssize_t i
    if ctx == NULL:
        return -1
    for i in range(n):
        if unwrap:
            status[i] = _unwrap_hop(ctx, ptrs[2 * i], ptrs[2 * i + 1], bs + i * B, outs[i])
        else:
            status[i] = _open_header(ctx, secret, ptrs[i], keys + i * KEYS)
        if status[i] < 0:
            failed = -1
    EVP_CIPHER_CTX_free(ctx)
    return failed


def open_headers(bytes secret, list packets):
    """Per packet: its keys ``hb|hrho|htau|hpi`` (64 bytes) if ``secret`` opens its header, else a status code.

    Codes: BAD_SIZE, NOT_CANONICAL (alpha), LOW_ORDER (alpha), BAD_MAC (not for this key).
    The caller keeps ``packets`` unchanged until this returns.
    """
    _need(secret, 32, "secret")
    cdef Py_ssize_t n = len(packets), i
    cdef const unsigned char* sp = <const unsigned char*>PyBytes_AS_STRING(secret)
    cdef const unsigned char** ptrs = <const unsigned char**>malloc(max(n, 1) * sizeof(void*))
    cdef int* status = <int*>malloc(max(n, 1) * sizeof(int))
    cdef unsigned char* out = <unsigned char*>malloc(max(n, 1) * KEYS)
    cdef int failed = 0
    if ptrs == NULL or status == NULL or out == NULL:
        free(ptrs); free(status); free(out)
        raise MemoryError()
    try:
        for i in range(n):
            p = packets[i]
            ptrs[i] = <const unsigned char*>PyBytes_AS_STRING(p) if type(p) is bytes and PyBytes_GET_SIZE(p) == PACKET else NULL
        with nogil:
            failed = _each(0, n, sp, ptrs, out, NULL, NULL, status)
        if failed:
            raise MemoryError("libcrypto: AES-128-ECB failed")
        return [PyBytes_FromStringAndSize(<char*>out + i * KEYS, KEYS) if status[i] == 0 else status[i]
                for i in range(n)]
    finally:
        free(ptrs); free(status); free(out)


cdef int _unwrap_hop(EVP_CIPHER_CTX* ctx, const unsigned char* pkt, const unsigned char* keys, unsigned char* b,
                     unsigned char* out) noexcept nogil:
    """Decrypt beta into ``b`` (B bytes) and write the packet for the next hop into ``out``."""
    cdef unsigned char blind[32]
    cdef const unsigned char* rest
    cdef SHA256_CTX c
    memcpy(b, pkt + ALPHA, BETA)
    memset(b + BETA, 0, BETA_PAD)
    if _aes(ctx, _CTR, keys + K, _ZEROS, b, b, B):  # sphinx._aes_ctr(hrho, beta + pad)
        return -1
    if _lioness_dec(ctx, keys + 3 * K, pkt + HEADER, out + HEADER):
        return -1
    SHA256_Init(&c)  # sphinx._blinding(hb): SHA-256(label | hb)
    SHA256_Update(&c, _BLINDING_LABEL, _BLINDING_LABEL_LEN)
    SHA256_Update(&c, keys, K)
    SHA256_Final(blind, &c)
    if _scalarmult(out, blind, pkt) != 0:
        return C_LOW_ORDER
    rest = b + 1 + b[0]
    memcpy(out + ALPHA, rest + K, BETA)
    memcpy(out + GAMMA_AT, rest, K)
    return 0


def unwrap_hops(list packets, list keys):
    """Per packet (with its keys from :func:`open_headers`): ``(routing, packet for the next hop)``, or LOW_ORDER."""
    cdef Py_ssize_t n = len(packets), i
    if len(keys) != n:
        raise ValueError("one set of keys per packet")
    cdef const unsigned char** ptrs = <const unsigned char**>malloc(max(n, 1) * 2 * sizeof(void*))
    cdef unsigned char** outs = <unsigned char**>malloc(max(n, 1) * sizeof(void*))
    cdef int* status = <int*>malloc(max(n, 1) * sizeof(int))
    cdef unsigned char* bs = <unsigned char*>malloc(max(n, 1) * B)
    cdef int failed = 0
    if ptrs == NULL or outs == NULL or status == NULL or bs == NULL:
        free(ptrs); free(outs); free(status); free(bs)
        raise MemoryError()
    try:
        results = []
        for i in range(n):
            p, k = packets[i], keys[i]
            _need(p, PACKET, "packet")
            _need(k, KEYS, "keys")
            ptrs[2 * i] = <const unsigned char*>PyBytes_AS_STRING(p)
            ptrs[2 * i + 1] = <const unsigned char*>PyBytes_AS_STRING(k)
            o = PyBytes_FromStringAndSize(NULL, PACKET)
            outs[i] = <unsigned char*>PyBytes_AS_STRING(o)
            results.append(o)
        with nogil:
            failed = _each(1, n, NULL, ptrs, NULL, bs, outs, status)
        if failed:
            raise MemoryError("libcrypto: AES-128-CTR failed")
        return [(PyBytes_FromStringAndSize(<char*>bs + i * B + 1, bs[i * B]), results[i]) if status[i] == 0
                else status[i] for i in range(n)]
    finally:
        free(ptrs); free(outs); free(status); free(bs)


def bloom_add(unsigned char[::1] array, bytes digest, unsigned long long bits):
    """Set the bits of one tag (16 little-endian 32-bit words of ``digest``, each mod ``bits``); True if all were set."""
    _need(digest, 64, "digest")
    if <unsigned long long>array.shape[0] * 8 < bits:
        raise ValueError("the filter is smaller than its bit count")
    cdef const unsigned char* d = <const unsigned char*>PyBytes_AS_STRING(digest)
    cdef unsigned long long index
    cdef unsigned char bit
    cdef bint seen = 1
    cdef int i
    for i in range(16):
        index = (<unsigned long long>d[4 * i] | (<unsigned long long>d[4 * i + 1] << 8)
                 | (<unsigned long long>d[4 * i + 2] << 16) | (<unsigned long long>d[4 * i + 3] << 24)) % bits
        bit = 1 << (index & 7)
        if not array[index >> 3] & bit:
            seen = 0
            array[index >> 3] |= bit
    return seen


if not _bind_scalarmult():  # no libsodium pointer: sphinx.py unwraps hop by hop through PyNaCl
    del open_headers, unwrap_hops
