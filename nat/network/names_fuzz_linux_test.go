package network

import (
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzNameAnswer: the name server's reading of untrusted queries (what
// any member can send). It never panics; what it answers itself is a
// well-formed response to the same query, with only the member's
// addresses, of the type asked; failure answers any query that parses.
func FuzzNameAnswer(f *testing.F) {
	srv := &Member{Name: "server", Addr: netip.MustParseAddr("10.0.0.2"), Addr6: netip.MustParseAddr("fd00::2")}
	s := &nameServer{search: []string{"test.example."}, lookup: func(name string) (*Member, bool) {
		return srv, name == "server"
	}}
	for _, name := range []string{"server.", "SERVER.test.example.", "other.", "server.other."} {
		for _, typ := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA, dnsmessage.TypeMX} {
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
			b.StartQuestions()
			b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET})
			q, _ := b.Finish()
			f.Add(q)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c})
	f.Fuzz(func(t *testing.T, q []byte) {
		failure(q)
		a, ok := s.answer(q)
		if !ok {
			return
		}
		var qp, ap dnsmessage.Parser
		qh, err := qp.Start(q)
		if err != nil {
			t.Fatalf("answered a query that does not parse: %v", err)
		}
		question, _ := qp.Question()
		ah, err := ap.Start(a)
		if err != nil || !ah.Response || ah.ID != qh.ID {
			t.Fatalf("answer %x: %v, %+v", a, err, ah)
		}
		aq, err := ap.Question()
		if err != nil || aq != question {
			t.Fatalf("answer's question %+v, want %+v (%v)", aq, question, err)
		}
		ap.SkipAllQuestions()
		for {
			h, err := ap.AnswerHeader()
			if err != nil {
				break
			}
			switch h.Type {
			case dnsmessage.TypeA:
				r, _ := ap.AResource()
				if question.Type != dnsmessage.TypeA || netip.AddrFrom4(r.A) != srv.Addr {
					t.Fatalf("A %v for %+v", r.A, question)
				}
			case dnsmessage.TypeAAAA:
				r, _ := ap.AAAAResource()
				if question.Type != dnsmessage.TypeAAAA || netip.AddrFrom16(r.AAAA) != srv.Addr6 {
					t.Fatalf("AAAA %v for %+v", r.AAAA, question)
				}
			default:
				t.Fatalf("answer of type %v", h.Type)
			}
		}
	})
}
