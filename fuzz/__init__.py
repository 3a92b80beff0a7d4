"""Coverage-guided fuzzing of every parser that reads bytes from outside the process.

Layout::

    fuzz/registry.py      @target(...) and the property every target shares
    fuzz/targets/*.py     the targets, one module per area (every module here is loaded)
    fuzz/corpus/NAME/     a small minimised corpus per target, committed; pytest replays it
    fuzz/child.py         one atheris (libFuzzer) process for one target
    fuzz/__main__.py      ``python -m fuzz list | seed | run | replay`` (``make fuzz`` runs it)

Adding a target is a few lines in any module of ``fuzz/targets/``::

    @target("dirproto_request", seeds=lambda: [b'{"type":"get_consensus","epoch":1}'])
    def dirproto_request(data: bytes) -> None:
        request = decode_request(data)                 # may raise only anonmail errors
        assert decode_request(encode_request(request)) == request

then ``python -m fuzz seed dirproto_request`` writes its seeds into ``fuzz/corpus/`` (commit them)
and ``make fuzz FUZZ_TARGETS=dirproto_request`` fuzzes it. This package imports nothing at import
time, so the child process can instrument anonmail before loading it.
"""
