/* Source fixture `c-worker`: C for the `c_buildpack` (a WASI preview1 core module,
 * so no sockets: it runs as a worker). Prints `c worker <instance index> started`,
 * then `c tick <n>` every 200 ms, forever. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(void) {
    const char *index = getenv("CF_INSTANCE_INDEX");
    printf("c worker %s started\n", index ? index : "0");
    fflush(stdout);
    struct timespec pause = {0, 200 * 1000 * 1000};
    for (unsigned long n = 1;; n++) {
        nanosleep(&pause, NULL);
        printf("c tick %lu\n", n);
        fflush(stdout);
    }
}
