"""uccl: the UCCL namespace package. Expert-parallel communication lives in `uccl.ep`."""
