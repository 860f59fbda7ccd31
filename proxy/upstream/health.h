/* Active upstream health checks (health.c), on the main thread's loop. */
#ifndef AE_HEALTH_H
#define AE_HEALTH_H

#include <ev.h>

#include "proxy/core/runtime.h"

typedef struct ae_health ae_health;
/* Creates the checker, idle until ae_health_set_runtime gives it servers: it then checks
 * every server of the runtime whose pool has a health block. 0 or AE_ERR_NOMEM. */
int ae_health_new(struct ev_loop *loop, ae_health **out);
/* Re-targets the checker at a new runtime (after reload); checks of servers that stay carry
 * their streaks over (they live in the shared server object). */
void ae_health_set_runtime(ae_health *h, ae_runtime *rt);
void ae_health_free(ae_health *h);

#endif
