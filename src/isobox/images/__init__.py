"""The image wing: an image reference in, verified layers on disk out.

`digest` owns content addresses (the grammar every module checks them by, and hashing);
`reference` (Docker's grammar) and `platform` name what to fetch; `credentials` finds
the login Docker would use; `http` talks to registries (auth, retries, redirects; the
one place ``requests``' errors become isobox's); `manifest` parses what they serve
(media types, manifests, indexes, the platform's choice); `registry` is the client that
asks for them and verifies the answers by digest and size; `ociconfig` parses an image's
configuration; `inflate` decompresses a layer stream and hashes its diff_id, `tar` reads
its headers, `unpack` applies its entries inside the layer's own root; `store` owns
the on-disk cache (layout, locks, temporary names, garbage collection); `image` is the
public `Image` that ties them together. Depends on `isobox.host` only, never on
containers.
"""
