/*
 * callback.h - callbacks: a job submitted with callback_url gets a POST
 * when it starts, succeeds and fails ({"event", "job"}), signed with
 * X-Gpuq-Signature: sha256=HMAC-SHA256([callbacks] secret, body) in hex.
 * A delivery is stored in the batch of the state change it reports and
 * retried with backoff until it gets a 2xx or [callbacks] attempts run
 * out, so a restart does not drop it.
 */
#ifndef GQ_CALLBACK_H
#define GQ_CALLBACK_H

struct gq_daemon;
struct gq_jobrec;
struct gq_cbd;

/* Loads stored deliveries and schedules them; 0 or a GQ_E* code. */
int gq_cb_start(struct gq_daemon *d);
/* Cancels everything in memory (what is stored stays stored). */
void gq_cb_close(struct gq_daemon *d);
/* Stores a delivery for r's callback_url (no-op without one), inside the
 * current batch; it is sent once the batch commits. */
void gq_cb_enqueue(struct gq_daemon *d, const struct gq_jobrec *r,
                   const char *event);
/* After a batch: ok = committed (send the staged deliveries), else
 * forget them. */
void gq_cb_batch_done(struct gq_daemon *d, int ok);
/* Detaches the deliveries staged by the batch just committed; they are
 * started with gq_cb_activate once that batch is durable. */
struct gq_cbd *gq_cb_take_staged(struct gq_daemon *d);
void gq_cb_activate(struct gq_daemon *d, struct gq_cbd *list);
/* Frees a detached list without sending it. */
void gq_cb_free_list(struct gq_cbd *list);
/* Hex HMAC-SHA256 of body under key into out (65 bytes). */
void gq_cb_sign(const char *key, const char *body, char out[65]);

#endif
