package nstest_test

import (
	"fmt"
	"log"

	"github.com/nsnet/nsnet/nstest"
)

// A fake host and internet in the private world (in a test, NewWorld
// does this and removes it when the test ends): the host's uplink reaches
// the outside host directly, and a TCP echo server there tells whom it
// saw.
func ExampleBuildWorld() {
	w, err := nstest.BuildWorld("ex-host", "ex-inet")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	srv, err := nstest.Serve(w.Inet, w.Outside.String()+":7")
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	seen, err := nstest.Echo(w.Host, w.Outside.String()+":7")
	fmt.Println(w.Uplink, w.UplinkAddr, "->", w.Outside, "sees", seen, err)
	// Output: up0 203.0.113.2/24 -> 203.0.113.1 sees 203.0.113.2 <nil>
}
