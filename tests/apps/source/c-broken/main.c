/* Source fixture `c-broken`: does not compile (an undeclared identifier), so its
 * staging fails with clang's message. */
#include <stdio.h>

int main(void) {
    printf("%d\n", undeclared_counter);
    return 0;
}
