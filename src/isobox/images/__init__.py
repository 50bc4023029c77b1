"""The image wing: an image reference in, verified layers on disk out.

`digest` owns content addresses (the grammar every module checks them by, and hashing);
`reference` (Docker's grammar) and `platform` name what to fetch; `credentials` finds
the login Docker would use; `registry` speaks the distribution protocol (tokens,
retries, manifests, blobs, verified by digest and size); `ociconfig` parses an image's
configuration; `unpack` applies a layer's tar stream inside its own root; `store` owns
the on-disk cache (layout, locks, temporary names, garbage collection); `image` is the
public `Image` that ties them together. Depends on `isobox.host` only, never on
containers.
"""
