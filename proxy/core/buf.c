/* Relay buffers: a free list per worker, no locking (see buf.h). */
#include "proxy/core/buf.h"

#include <stdlib.h>

ae_buf *ae_buf_get(ae_bufpool *p, uint32_t size)
{
    ae_buf *b = p->free;
    if (b != NULL && b->cap == size) {
        p->free = b->next;
        p->nfree--;
    } else {
        b = malloc(sizeof(*b) + size);
        if (b == NULL)
            return NULL;
        b->cap = size;
    }
    b->next = NULL;
    b->off = b->len = 0;
    return b;
}

void ae_buf_put(ae_bufpool *p, ae_buf *b)
{
    if (b == NULL)
        return;
    /* After a reload that changed tune.buffer_size, old-size buffers are simply freed. */
    if (p->nfree >= AE_BUFPOOL_KEEP || (p->size != 0 && b->cap != p->size)) {
        free(b);
        return;
    }
    b->next = p->free;
    p->free = b;
    p->nfree++;
}

void ae_bufpool_set_size(ae_bufpool *p, uint32_t size)
{
    p->size = size;
}

void ae_bufpool_clear(ae_bufpool *p)
{
    while (p->free != NULL) {
        ae_buf *b = p->free;
        p->free = b->next;
        free(b);
    }
    p->nfree = 0;
}
