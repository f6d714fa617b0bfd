/* Which datapath thread receives a frame, with several (datapath.h): the steering rule
 * of each port's AF_PACKET fanout group, a classic BPF program the kernel runs on each
 * frame (PACKET_FANOUT_CBPF; its result modulo the group's sockets picks one).
 *
 * A session must be handled by one thread: its two entries (lb.h) live in that
 * thread's table.  Its two directions are not one 5-tuple's two ways, though: the
 * request is client -> VIP, the reply pod -> client (the DNAT changed one end), so no
 * hash of both ends (the kernel's symmetric flow hash, PACKET_FANOUT_HASH) sends them
 * to one thread.  What both directions share is the client's end, and its port stays
 * when an address is translated (DNAT to a pod, hairpin and NodePort SNAT to the node):
 * the rule hashes the larger of the two L4 ports, which is the client's ephemeral port
 * (Linux: 32768..60999) against a Service's port, a NodePort (30000..32767) and a pod's
 * port.  A client whose port is smaller than the Service's or the pod's port has its
 * session's two directions on two threads (counted: lb's split_sessions), and its
 * replies are not translated back.  The larger port alone is also symmetric, so every
 * other flow keeps both its directions on one thread.
 *
 *   TCP, UDP, SCTP (IPv4 but fragments, IPv6 with no extension header first):
 *       steer = mix(max(source port, destination port))
 *   other IPv4 (fragments included: every fragment of a datagram on one thread):
 *       steer = mix(source ^ destination), the addresses as 32-bit words
 *   other IPv6: mix of the xor of the eight 32-bit words of both addresses
 *   anything else (ARP, ...): 0
 *   mix(x) = (x * 0x9E3779B1 mod 2^32) >> 16   (ports are often all even: Linux's
 *            connect() prefers them, so the port itself modulo 2 would pick one thread)
 *   thread = steer mod the number of threads
 *
 * tests/switch/test_threads.py checks the kernel's choice against its own copy of this
 * rule with real frames. */
#ifndef KP_STEER_H
#define KP_STEER_H

#include <linux/filter.h>
#include <stdint.h>

#define STEER_MIX 0x9E3779B1u

/* The program (static storage): for PACKET_FANOUT_DATA. */
const struct sock_fprog *steer_program(void);

/* The same rule in C, on a session key's ports (lb.c: the thread a key reaches). */
static inline uint32_t steer_ports(uint16_t a, uint16_t b)
{
    return (uint32_t)((uint32_t)(a > b ? a : b) * STEER_MIX) >> 16;
}

#endif
