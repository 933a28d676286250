// Package nl is the rtnetlink plumbing the public packages share: a socket
// dialled directly into a namespace, batched requests with one reply or
// acknowledgement counted per request, link lookups by name, interface-name
// validation and the mapping of kernel errno values onto os.ErrNotExist and
// friends.
package nl
