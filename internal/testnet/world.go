package testnet

import (
	"testing"

	"github.com/nsnet/nsnet/internal/world"
)

// World is a private host and internet (see package world) made by NewWorld.
type World = world.World

// NewWorld builds a World whose namespaces are called prefix+"host" and
// prefix+"inet"; it is removed when t ends.
func NewWorld(t testing.TB, prefix string) *World {
	t.Helper()
	w, err := world.New(prefix+"host", prefix+"inet")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}
