from tests.suite import ServedApp


async def test_register_then_me(gateway: ServedApp) -> None:
    async with gateway.client() as http:
        response = await http.post(
            "/api/auth/register",
            json={
                "email": "Smoke@Example.com",
                "password": "secret123",
                "name": "Smoke",
            },
        )
        assert response.status_code == 201, response.text
        body = response.json()
        me = await http.get(
            "/api/auth/me", headers={"Authorization": f"Bearer {body['accessToken']}"}
        )
        assert me.status_code == 200, me.text
        assert me.json()["email"] == "smoke@example.com"
