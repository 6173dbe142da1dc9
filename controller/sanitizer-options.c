/* Built into autoballoond only with -Db_sanitize=address: run-time defaults of the sanitizer
 * that the environment ($ASAN_OPTIONS) can still override flag by flag. */

const char *__asan_default_options(void);

/* libvirt is dlopen()ed (libvirt-dl.c), so its thread-local variables and glib's are dynamic
 * TLS. LeakSanitizer follows those through __tls_get_addr(), and with GCC 12's runtime on
 * glibc 2.36 its tracer now and then crashes on a block it misreads at the exit leak check
 * ("Tracer caught signal 11"; seen here in 1 of 5 runs of daemon-libvirt-backend). Without
 * that interception, dynamic TLS is not a root of the leak scan: a block held only from there
 * would be reported, not hidden. */
const char *__asan_default_options(void) {
        return "intercept_tls_get_addr=0";
}
