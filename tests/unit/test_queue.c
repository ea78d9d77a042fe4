/* Unit tests for src/queue.h, the intrusive list that holds the node's
 * pending reads and writes: what goes in comes out in order, once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "queue.h"

struct item
{
    int n;
    struct queue link;
};

/* The numbers of @head's items, front to back, into @out (at most @cap),
 * checking the back links on the way.  Returns how many. */
static int numbers(struct queue *head, int *out, int cap)
{
    int k = 0;
    for (struct queue *q = head->next; q != head; q = q->next) {
        assert_ptr_equal(q->next->prev, q);
        assert_true(k < cap);
        out[k++] = queue_data(q, struct item, link)->n;
    }
    assert_ptr_equal(head->prev->next, head);
    return k;
}

static void expect(struct queue *head, const int *want, int count)
{
    int got[16];
    assert_int_equal(numbers(head, got, 16), count);
    for (int i = 0; i < count; i++)
        assert_int_equal(got[i], want[i]);
}

/* Reads waiting behind an entry keep their order, front pushes go first,
 * and a removed item leaves its neighbours linked. */
static void test_push_front_and_remove(void **state)
{
    (void)state;
    struct queue head;
    struct item it[4] = {{.n = 0}, {.n = 1}, {.n = 2}, {.n = 3}};

    queue_init(&head);
    assert_true(queue_empty(&head));
    queue_push(&head, &it[1].link);
    queue_push(&head, &it[2].link);
    queue_push_front(&head, &it[0].link);
    queue_push(&head, &it[3].link);
    expect(&head, (int[]){0, 1, 2, 3}, 4);
    queue_remove(&it[2].link);
    expect(&head, (int[]){0, 1, 3}, 3);
    assert_true(queue_empty(&it[2].link)); /* removing it again is harmless */
    queue_remove(&it[2].link);
    expect(&head, (int[]){0, 1, 3}, 3);
}

/* The reads waiting when a question goes out all move behind it, after
 * any it already carries, in the order they arrived; the waiting list is
 * empty and usable again; moving an empty list changes nothing. */
static void test_move_all_appends_in_order(void **state)
{
    (void)state;
    struct queue waiting, carried;
    struct item it[5] = {{.n = 0}, {.n = 1}, {.n = 2}, {.n = 3}, {.n = 4}};

    queue_init(&waiting);
    queue_init(&carried);
    queue_move_all(&waiting, &carried);
    assert_true(queue_empty(&waiting) && queue_empty(&carried));

    queue_push(&waiting, &it[0].link);
    queue_push(&waiting, &it[1].link);
    queue_move_all(&waiting, &carried); /* into an empty list */
    assert_true(queue_empty(&waiting));
    expect(&carried, (int[]){0, 1}, 2);

    queue_push(&waiting, &it[2].link);
    queue_push(&waiting, &it[3].link);
    queue_push(&waiting, &it[4].link);
    queue_move_all(&waiting, &carried); /* behind what it holds */
    assert_true(queue_empty(&waiting));
    expect(&carried, (int[]){0, 1, 2, 3, 4}, 5);

    queue_move_all(&waiting, &carried);
    expect(&carried, (int[]){0, 1, 2, 3, 4}, 5);
    struct item late = {.n = 9};
    queue_push(&waiting, &late.link);
    expect(&waiting, (int[]){9}, 1);
    expect(&carried, (int[]){0, 1, 2, 3, 4}, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_front_and_remove),
        cmocka_unit_test(test_move_all_appends_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
