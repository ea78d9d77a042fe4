/* queue.h - an intrusive doubly-linked list (circular, with a head node).
 *
 * Used wherever the node keeps a set of pending operations that it must be
 * able to walk at shutdown. */
#ifndef RAFTKV_QUEUE_H
#define RAFTKV_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

struct queue
{
    struct queue *next, *prev;
};

static inline void queue_init(struct queue *q) { q->next = q->prev = q; }

static inline bool queue_empty(const struct queue *q) { return q->next == q; }

static inline void queue_push(struct queue *head, struct queue *item)
{
    item->prev = head->prev;
    item->next = head;
    head->prev->next = item;
    head->prev = item;
}

/* Insert @item first, before everything already in @head. */
static inline void queue_push_front(struct queue *head, struct queue *item)
{
    item->next = head->next;
    item->prev = head;
    head->next->prev = item;
    head->next = item;
}

static inline void queue_remove(struct queue *item)
{
    item->prev->next = item->next;
    item->next->prev = item->prev;
    item->next = item->prev = item;
}

/* Move every item of @from, in order, to the end of @to; @from is left
 * empty.  O(1): the two lists are spliced. */
static inline void queue_move_all(struct queue *from, struct queue *to)
{
    if (queue_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    queue_init(from);
}

#define queue_data(ptr, type, field)                                           \
    ((type *)((char *)(ptr)-offsetof(type, field)))

#endif
