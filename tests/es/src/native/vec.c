/*
 * Stand-in for Elasticsearch's native vector library (libvec), which is not on Maven Central.
 *
 * Elasticsearch loads its native libraries (libvec, libzstd) together from -Des.nativelibs.path:
 * if one is missing, all native access is disabled, and then zstd compression
 * (index.codec: best_compression) fails and the indexing request never returns. Capabilities 0
 * tells the server this CPU has no SIMD support, so it uses its Java vector code and binds no
 * other function of this library. libzstd is the system's (Debian's libzstd1).
 */
int vec_caps(void) { return 0; }
