/* Software TCP segmentation (twin: fastpath_ref.segment_tcp).
 *
 * A veth hands AF_PACKET the sender's GSO super-frames (up to 64 KiB of TCP in one
 * frame) because the kernel expects to segment them late; a frame we send on gets no
 * such help, and one larger than the egress MTU would be refused.  So frames that do
 * not fit are cut into MTU-sized segments here, each with its own IP length/id, TCP
 * sequence number, flags and full checksums. */
#ifndef KP_SEGMENT_H
#define KP_SEGMENT_H

#include <stdint.h>

typedef void (*seg_emit_fn)(void *ctx, const uint8_t *seg, uint32_t len);

/* Bytes of scratch tcp_segment needs for an MTU. */
#define SEG_SCRATCH(mtu) ((mtu) + 64u)

/* If frame is TCP whose IP packet exceeds mtu, emits its segments (built in scratch,
 * at least SEG_SCRATCH(mtu) bytes) and returns how many; returns 0 for a frame to be
 * sent as it is. */
int tcp_segment(const uint8_t *frame, uint32_t len, uint32_t mtu, uint8_t *scratch,
                uint32_t scratch_len, seg_emit_fn emit, void *ctx);

#endif
