// Package addrplan is a link's address plan: one network per family, each
// a prefix with the host end's and the namespace's addresses (the first
// two host addresses by default, or a point-to-point pair), checked before
// anything is made, and the netlink requests that add them. It has no
// state.
package addrplan
